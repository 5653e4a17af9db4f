package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// maxBodyBytes bounds a request body: a full 4,096-token context as a JSON
// token array is ~25 KiB, so 4 MiB leaves room for long chats while
// keeping a hostile body from costing memory.
const maxBodyBytes = 4 << 20

// Defaults of the OpenAI API where a field is absent.
const (
	defaultCompletionTokens = 16  // OpenAI's default for /v1/completions
	defaultChatTokens       = 256 // OpenAI uses "the rest of the context"; capped so a CPU engine answers in seconds
)

// samplingFields are shared by both endpoints. Pointers tell absent from 0.
type samplingFields struct {
	Model       string   `json:"model"`
	MaxTokens   *int     `json:"max_tokens"`
	Temperature *float64 `json:"temperature"`
	TopP        *float64 `json:"top_p"`
	Seed        *int64   `json:"seed"`
	N           *int     `json:"n"`
	Stream      bool     `json:"stream"`
	// CacheSalt (vLLM's field) isolates the request's cache namespace
	// (isolation.go).
	CacheSalt *string `json:"cache_salt"`
}

type completionRequest struct {
	samplingFields
	Prompt json.RawMessage `json:"prompt"`
}

type chatRequest struct {
	samplingFields
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// apiError is an OpenAI-style error: {"error": {...}} with an HTTP status.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

func badRequest(param, code, format string, a ...any) *apiError {
	e := &apiError{Status: http.StatusBadRequest, Message: fmt.Sprintf(format, a...), Type: "invalid_request_error"}
	if param != "" {
		e.Param = &param
	}
	if code != "" {
		e.Code = &code
	}
	return e
}

// decodeBody reads one JSON object into v, turning every way it can be
// wrong into a 400 (or 413 for an oversized body).
func decodeBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("trailing data after the JSON object")
	}
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			err = errors.New("trailing data after the JSON object")
		}
	}
	var (
		typeErr *json.UnmarshalTypeError
		tooBig  *http.MaxBytesError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		e := badRequest("", "request_too_large", "request body exceeds %d bytes", tooBig.Limit)
		e.Status = http.StatusRequestEntityTooLarge
		return e
	case errors.As(err, &typeErr):
		// Fields of the embedded samplingFields are reported with its
		// Go name as a path element; clients know them by JSON name only.
		field := strings.TrimPrefix(typeErr.Field, "samplingFields.")
		return badRequest(field, "invalid_type", "invalid type for '%s': expected %s, got a JSON %s", field, typeErr.Type, typeErr.Value)
	default:
		return badRequest("", "invalid_json", "could not parse the JSON body of the request: %v", err)
	}
}

// params holds validated sampling settings.
type params struct {
	maxTokens         int // 0: endpoint default
	temperature, topP float64
	seed              uint64
	stream            bool
	cacheSalt         string
}

// check validates the shared fields against the served model.
func (s *samplingFields) check(modelID string) (params, *apiError) {
	p := params{temperature: 1, topP: 1, stream: s.Stream}
	if s.Model != "" && s.Model != modelID {
		return p, badRequest("model", "model_not_found", "the model '%s' does not exist; this worker serves '%s'", s.Model, modelID)
	}
	if s.CacheSalt != nil {
		if *s.CacheSalt == "" || len(*s.CacheSalt) > MaxCacheSaltBytes {
			return p, badRequest("cache_salt", "invalid_value", "cache_salt must be a non-empty string of at most %d bytes", MaxCacheSaltBytes)
		}
		p.cacheSalt = *s.CacheSalt
	}
	if s.N != nil && *s.N != 1 {
		return p, badRequest("n", "invalid_value", "n must be 1, got %d", *s.N)
	}
	if s.Temperature != nil {
		if *s.Temperature < 0 || *s.Temperature > 2 {
			return p, badRequest("temperature", "invalid_value", "temperature must be between 0 and 2, got %g", *s.Temperature)
		}
		p.temperature = *s.Temperature
	}
	if s.TopP != nil {
		if *s.TopP <= 0 || *s.TopP > 1 {
			return p, badRequest("top_p", "invalid_value", "top_p must be in (0, 1], got %g", *s.TopP)
		}
		p.topP = *s.TopP
	}
	if s.MaxTokens != nil {
		if *s.MaxTokens < 1 {
			return p, badRequest("max_tokens", "invalid_value", "max_tokens must be at least 1, got %d", *s.MaxTokens)
		}
		p.maxTokens = *s.MaxTokens
	}
	if s.Seed != nil {
		p.seed = uint64(*s.Seed)
	} else {
		p.seed = rand.Uint64() // OpenAI: no seed means not reproducible
	}
	return p, nil
}

// promptTokens parses the completions prompt: a string (tokenized, BOS
// added when the model wants it; control-token text stays text), an array
// of token ids (used as given), or a one-element array of either.
func promptTokens(raw json.RawMessage, tok tokenizer.Tokenizer) ([]int, *apiError) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, badRequest("prompt", "missing_required_parameter", "'prompt' is required")
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil, badRequest("prompt", "invalid_value", "'prompt' is empty")
		}
		var ids []int
		if tok.AddBOS() && tok.BOS() >= 0 {
			ids = append(ids, tok.BOS())
		}
		return append(ids, tok.Encode(s)...), nil
	}
	var ids []int
	if json.Unmarshal(raw, &ids) == nil {
		if len(ids) == 0 {
			return nil, badRequest("prompt", "invalid_value", "'prompt' is empty")
		}
		return ids, nil
	}
	var batch []json.RawMessage
	if json.Unmarshal(raw, &batch) == nil && len(batch) > 0 && isBatch(batch) {
		if len(batch) > 1 {
			return nil, badRequest("prompt", "invalid_value", "batched prompts are not supported; send one prompt per request")
		}
		return promptTokens(batch[0], tok)
	}
	return nil, badRequest("prompt", "invalid_type", "'prompt' must be a string or an array of token ids (integers)")
}

// isBatch reports whether every element is a string or an array: the
// OpenAI form of several prompts in one request.
func isBatch(elems []json.RawMessage) bool {
	for _, e := range elems {
		if b := strings.TrimSpace(string(e)); !strings.HasPrefix(b, "\"") && !strings.HasPrefix(b, "[") {
			return false
		}
	}
	return true
}

// chatMessages converts the messages, whose content is a string or an
// array of {"type":"text","text":...} parts.
func chatMessages(in []chatMessage) ([]tokenizer.Message, *apiError) {
	if len(in) == 0 {
		return nil, badRequest("messages", "missing_required_parameter", "'messages' must be a non-empty array")
	}
	out := make([]tokenizer.Message, len(in))
	for i, m := range in {
		param := fmt.Sprintf("messages.[%d]", i)
		if m.Role == "" {
			return nil, badRequest(param+".role", "missing_required_parameter", "message %d has no role", i)
		}
		var text string
		if err := json.Unmarshal(m.Content, &text); err != nil {
			var parts []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			}
			if err := json.Unmarshal(m.Content, &parts); err != nil {
				return nil, badRequest(param+".content", "invalid_type", "message %d content must be a string or an array of text parts", i)
			}
			var b strings.Builder
			for _, p := range parts {
				if p.Type != "text" {
					return nil, badRequest(param+".content", "invalid_value", "message %d has a %q part; only text is supported", i, p.Type)
				}
				b.WriteString(p.Text)
			}
			text = b.String()
		}
		out[i] = tokenizer.Message{Role: m.Role, Content: text}
	}
	return out, nil
}

// usage is the OpenAI usage object.
type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func usageOf(r *Result) *usage {
	u := &usage{PromptTokens: r.PromptTokens, CompletionTokens: len(r.Tokens), TotalTokens: r.PromptTokens + len(r.Tokens)}
	u.PromptTokensDetails.CachedTokens = r.CachedTokens
	return u
}

type completionChoice struct {
	Text         string  `json:"text"`
	Index        int     `json:"index"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatContent `json:"message,omitempty"`
	Delta        *chatContent `json:"delta,omitempty"`
	Logprobs     any          `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type chatContent struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// response is the body of a completion, a chat completion or one of their
// stream chunks; Choices holds completionChoice or chatChoice values.
type response struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices any      `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
	Timings *Timings `json:"timings,omitempty"`
}
