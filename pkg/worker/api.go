package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"reflect"
	"strconv"
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

// Request bodies are decoded strictly: a field this API does not know is
// a 400 naming it ("unrecognized request argument", as OpenAI answers),
// never ignored. Fields the spec has but this worker cannot honour are
// accepted only at their neutral value (absent, null, or the value that
// changes nothing, such as frequency_penalty 0 or tools []) and otherwise
// rejected naming the field. To support a new field, add it to the struct
// of its endpoint (or samplingFields for both) and check it in check.

// samplingFields are shared by both endpoints. Pointers tell absent from 0.
type samplingFields struct {
	Model         string         `json:"model"`
	MaxTokens     *int           `json:"max_tokens"`
	Temperature   *float64       `json:"temperature"`
	TopP          *float64       `json:"top_p"`
	Seed          *int64         `json:"seed"`
	N             *int           `json:"n"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	Stop          stopField      `json:"stop"`
	// User identifies the end user; it is logged with the request.
	User string `json:"user"`
	// Accepted at their neutral value only.
	FrequencyPenalty *float64          `json:"frequency_penalty"`
	PresencePenalty  *float64          `json:"presence_penalty"`
	LogitBias        map[string]any    `json:"logit_bias"`
	Metadata         map[string]string `json:"metadata"`
	Store            *bool             `json:"store"`
	// CacheSalt (vLLM's field) isolates the request's cache namespace
	// (isolation.go).
	CacheSalt *string `json:"cache_salt"`
}

type streamOptions struct {
	IncludeUsage       bool  `json:"include_usage"`
	IncludeObfuscation *bool `json:"include_obfuscation"`
}

// stopField is OpenAI's stop: null, a string, or an array of strings.
type stopField []string

func (s *stopField) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		*s = nil
		return nil
	}
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = stopField{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &json.UnmarshalTypeError{Value: jsonKind(b), Type: reflect.TypeFor[[]string]()}
	}
	*s = many
	return nil
}

func jsonKind(b []byte) string {
	switch t := strings.TrimSpace(string(b)); {
	case strings.HasPrefix(t, "{"):
		return "object"
	case strings.HasPrefix(t, "["):
		return "array with a non-string"
	case t == "true" || t == "false":
		return "bool"
	}
	return "number"
}

type completionRequest struct {
	samplingFields
	Prompt   json.RawMessage `json:"prompt"`
	Echo     bool            `json:"echo"`
	Logprobs *int            `json:"logprobs"`
	BestOf   *int            `json:"best_of"`
	Suffix   *string         `json:"suffix"`
}

type chatRequest struct {
	samplingFields
	Messages            []chatMessage `json:"messages"`
	MaxCompletionTokens *int          `json:"max_completion_tokens"`
	Logprobs            bool          `json:"logprobs"`
	TopLogprobs         *int          `json:"top_logprobs"`
	// Accepted at their neutral value only.
	ResponseFormat    json.RawMessage `json:"response_format"`
	Tools             json.RawMessage `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	Functions         json.RawMessage `json:"functions"`
	FunctionCall      json.RawMessage `json:"function_call"`
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
	// Accepted when absent or null only.
	Name       *string         `json:"name"`
	ToolCalls  json.RawMessage `json:"tool_calls"`
	ToolCallID *string         `json:"tool_call_id"`
	Refusal    json.RawMessage `json:"refusal"`
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
	dec.DisallowUnknownFields()
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
		netErr  net.Error
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &netErr) && netErr.Timeout():
		return &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Message: "the request body was not received in time"}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return badRequest(field, "unknown_parameter", "unrecognized request argument supplied: %s (this worker rejects fields it does not implement rather than ignore them)", field)
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

// params holds validated request settings.
type params struct {
	maxTokens         int // 0: endpoint default
	temperature, topP float64
	seed              uint64
	n                 int
	stop              []string
	stream            bool
	includeUsage      bool
	logprobs          bool
	topLogprobs       int
	echo              bool
	user              string
	cacheSalt         string
}

// check validates the shared fields against the served model.
func (s *samplingFields) check(modelID string) (params, *apiError) {
	p := params{temperature: 1, topP: 1, stream: s.Stream, n: 1, user: s.User}
	if s.Model != "" && s.Model != modelID {
		return p, badRequest("model", "model_not_found", "the model '%s' does not exist; this worker serves '%s'", s.Model, modelID)
	}
	if s.CacheSalt != nil {
		if *s.CacheSalt == "" || len(*s.CacheSalt) > MaxCacheSaltBytes {
			return p, badRequest("cache_salt", "invalid_value", "cache_salt must be a non-empty string of at most %d bytes", MaxCacheSaltBytes)
		}
		p.cacheSalt = *s.CacheSalt
	}
	if s.N != nil {
		if *s.N < 1 || *s.N > MaxN {
			return p, badRequest("n", "invalid_value", "n must be between 1 and %d, got %d", MaxN, *s.N)
		}
		p.n = *s.N
	}
	if s.StreamOptions != nil {
		if !s.Stream {
			return p, badRequest("stream_options", "invalid_value", "stream_options is only allowed when stream is true")
		}
		if o := s.StreamOptions.IncludeObfuscation; o != nil && *o {
			return p, badRequest("stream_options.include_obfuscation", "unsupported_value", "stream obfuscation is not supported")
		}
		p.includeUsage = s.StreamOptions.IncludeUsage
	}
	if len(s.Stop) > MaxStop {
		return p, badRequest("stop", "invalid_value", "stop takes at most %d strings, got %d", MaxStop, len(s.Stop))
	}
	for _, st := range s.Stop {
		if st == "" {
			return p, badRequest("stop", "invalid_value", "stop strings must not be empty")
		}
		if len(st) > maxStopBytes {
			return p, badRequest("stop", "invalid_value", "a stop string is limited to %d bytes", maxStopBytes)
		}
	}
	p.stop = s.Stop
	for _, f := range []struct {
		name string
		v    *float64
	}{{"frequency_penalty", s.FrequencyPenalty}, {"presence_penalty", s.PresencePenalty}} {
		if f.v != nil && *f.v != 0 {
			return p, badRequest(f.name, "unsupported_parameter", "%s is not supported (only 0, its neutral value, is accepted)", f.name)
		}
	}
	if len(s.LogitBias) > 0 {
		return p, badRequest("logit_bias", "unsupported_parameter", "logit_bias is not supported (only an empty map is accepted)")
	}
	if s.Store != nil && *s.Store {
		return p, badRequest("store", "unsupported_parameter", "store is not supported: this worker keeps no completions")
	}
	if len(s.Metadata) > 0 {
		return p, badRequest("metadata", "unsupported_parameter", "metadata is only used with store, which is not supported")
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

// maxStopBytes bounds one stop string: stop matching holds back up to
// this many bytes of a stream.
const maxStopBytes = 256

// check validates the completions-only fields.
func (c *completionRequest) check(modelID string) (params, *apiError) {
	p, e := c.samplingFields.check(modelID)
	if e != nil {
		return p, e
	}
	if c.Logprobs != nil {
		if *c.Logprobs < 0 || *c.Logprobs > MaxTopLogprobs {
			return p, badRequest("logprobs", "invalid_value", "logprobs must be between 0 and %d, got %d", MaxTopLogprobs, *c.Logprobs)
		}
		if c.Echo {
			return p, badRequest("logprobs", "unsupported_parameter", "logprobs together with echo (log probabilities of the prompt) is not supported")
		}
		p.logprobs, p.topLogprobs = true, *c.Logprobs
	}
	if c.BestOf != nil && *c.BestOf != p.n {
		return p, badRequest("best_of", "unsupported_parameter", "best_of must equal n (%d): ranking candidates is not supported", p.n)
	}
	if c.Suffix != nil && *c.Suffix != "" {
		return p, badRequest("suffix", "unsupported_parameter", "suffix (insertion) is not supported")
	}
	p.echo = c.Echo
	return p, nil
}

// check validates the chat-only fields.
func (c *chatRequest) check(modelID string) (params, *apiError) {
	if c.MaxTokens == nil {
		c.MaxTokens = c.MaxCompletionTokens
	}
	p, e := c.samplingFields.check(modelID)
	if e != nil {
		return p, e
	}
	if c.TopLogprobs != nil {
		if !c.Logprobs {
			return p, badRequest("top_logprobs", "invalid_value", "top_logprobs requires logprobs to be true")
		}
		if *c.TopLogprobs < 0 || *c.TopLogprobs > MaxTopLogprobs {
			return p, badRequest("top_logprobs", "invalid_value", "top_logprobs must be between 0 and %d, got %d", MaxTopLogprobs, *c.TopLogprobs)
		}
		p.topLogprobs = *c.TopLogprobs
	}
	p.logprobs = c.Logprobs
	if !isNull(c.ResponseFormat) {
		var rf struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(c.ResponseFormat, &rf) != nil || rf.Type != "text" {
			return p, badRequest("response_format", "unsupported_parameter", "response_format %s is not supported: only {\"type\": \"text\"}; structured output (json_object, json_schema) is not implemented", c.ResponseFormat)
		}
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"tools", c.Tools}, {"functions", c.Functions}} {
		if !isNull(f.raw) && strings.TrimSpace(string(f.raw)) != "[]" {
			return p, badRequest(f.name, "unsupported_parameter", "%s (function calling) is not supported", f.name)
		}
	}
	for _, f := range []struct {
		name string
		raw  json.RawMessage
	}{{"tool_choice", c.ToolChoice}, {"function_call", c.FunctionCall}} {
		if !isNull(f.raw) && strings.TrimSpace(string(f.raw)) != `"none"` {
			return p, badRequest(f.name, "unsupported_parameter", "%s is not supported (function calling is not implemented); only \"none\" is accepted", f.name)
		}
	}
	if c.ParallelToolCalls != nil {
		return p, badRequest("parallel_tool_calls", "unsupported_parameter", "parallel_tool_calls is not supported (function calling is not implemented)")
	}
	return p, nil
}

func isNull(raw json.RawMessage) bool {
	t := strings.TrimSpace(string(raw))
	return t == "" || t == "null"
}

// promptTokens parses the completions prompt: a string (tokenized, BOS
// added when the model wants it; control-token text stays text), an array
// of token ids (used as given), or a one-element array of either. A string
// is tokenized only as far as maxTokens allows (tokenizer.NoLimit: no
// bound) and while ctx lasts (see tokenizeError); tokenized counts the
// tokens it produced, also when it fails.
func promptTokens(ctx context.Context, raw json.RawMessage, tok tokenizer.Tokenizer, maxTokens int, tokenized func(int)) ([]int, *apiError) {
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
			if maxTokens > 0 {
				maxTokens--
			}
		}
		text, err := tokenizer.EncodeLimited(ctx, tok, s, maxTokens)
		tokenized(len(text))
		if err != nil {
			return nil, tokenizeError("prompt", err)
		}
		return append(ids, text...), nil
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
		return promptTokens(ctx, batch[0], tok, maxTokens, tokenized)
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
		for _, f := range []struct {
			name string
			set  bool
		}{{"name", m.Name != nil}, {"tool_calls", !isNull(m.ToolCalls)}, {"tool_call_id", m.ToolCallID != nil}, {"refusal", !isNull(m.Refusal)}} {
			if f.set {
				return nil, badRequest(param+"."+f.name, "unsupported_parameter", "message field %s is not supported", f.name)
			}
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
