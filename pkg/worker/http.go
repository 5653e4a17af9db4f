package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// Handler returns the OpenAI-compatible HTTP API:
//
//	POST /v1/completions       prompt as a string or token ids
//	POST /v1/chat/completions  messages rendered by the model's chat template
//	GET  /v1/models            the one served model
//	GET  /healthz              200 "ok"
//	GET  /metrics              Prometheus, the worker's own registry
//
// Invalid requests get HTTP 400 with an OpenAI error object, including an
// unknown model (OpenAI itself answers 404 there; we follow the issue's
// "bad input is a 400", with code "model_not_found" so clients can tell).
// An oversized body gets 413.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/completions", w.instrument("completions", w.handleCompletions))
	mux.Handle("POST /v1/chat/completions", w.instrument("chat", w.handleChat))
	mux.Handle("GET /v1/models", w.instrument("models", w.handleModels))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		writeError(rw, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: "unknown endpoint " + r.Method + " " + r.URL.Path})
	})
	return mux
}

func (w *Worker) handleModels(rw http.ResponseWriter, _ *http.Request) {
	writeJSON(rw, http.StatusOK, map[string]any{
		"object": "list",
		"data": []map[string]any{{
			"id": w.ModelID(), "object": "model", "created": 0, "owned_by": "kvcache",
			"context_length": w.info.ContextLen, "block_tokens": w.cfg.BlockTokens,
			"kv_bytes_per_token": w.m.KVBytesPerToken(), "codec": w.cfg.Codec.String(),
		}},
	})
}

func (w *Worker) handleCompletions(rw http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if e := decodeBody(rw, r, &req); e != nil {
		writeError(rw, e)
		return
	}
	p, e := req.check(w.ModelID())
	if e != nil {
		writeError(rw, e)
		return
	}
	prompt, e := promptTokens(req.Prompt, w.m.Tokenizer())
	if e != nil {
		writeError(rw, e)
		return
	}
	w.serve(rw, r, "prompt", prompt, p, defaultCompletionTokens, nil, false)
}

func (w *Worker) handleChat(rw http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if e := decodeBody(rw, r, &req); e != nil {
		writeError(rw, e)
		return
	}
	if req.MaxTokens == nil {
		req.MaxTokens = req.MaxCompletionTokens
	}
	p, e := req.check(w.ModelID())
	if e != nil {
		writeError(rw, e)
		return
	}
	msgs, e := chatMessages(req.Messages)
	if e != nil {
		writeError(rw, e)
		return
	}
	tmpl, tok := w.m.ChatTemplate(), w.m.Tokenizer()
	prompt, err := tokenizer.EncodeChat(tok, tmpl, msgs, true)
	if err != nil {
		writeError(rw, badRequest("messages", "invalid_chat", "%v", err))
		return
	}
	w.serve(rw, r, "messages", prompt, p, defaultChatTokens, stopTokens(tok, tmpl), true)
}

// stopTokens are the template's end-of-turn markers that are single
// control tokens (e.g. <|im_end|>); multi-token markers are not matched.
func stopTokens(tok tokenizer.Tokenizer, tmpl tokenizer.Template) []int {
	var ids []int
	for _, s := range tmpl.Stop() {
		if t := tok.EncodeSpecial(s); len(t) == 1 && tok.TokenBytes(t[0]) == nil {
			ids = append(ids, t[0])
		}
	}
	return ids
}

// serve validates and runs one generation and writes it as JSON or SSE.
func (w *Worker) serve(rw http.ResponseWriter, r *http.Request, promptParam string, prompt []int, p params, defTokens int, stop []int, chat bool) {
	room := w.info.ContextLen - len(prompt)
	if p.maxTokens == 0 {
		p.maxTokens = max(1, min(defTokens, room))
	}
	req := Request{Prompt: prompt, MaxTokens: p.maxTokens, Temperature: p.temperature, TopP: p.topP, Seed: p.seed, StopTokens: stop,
		Isolation: Isolation(tenantOf(r.Context()), p.cacheSalt)}
	if err := w.validate(req); err != nil {
		writeError(rw, apiErrorFor(err, promptParam))
		return
	}
	out := newOutput(rw, w.ModelID(), chat, w.m.Tokenizer())
	if p.stream {
		out.begin()
		req.OnToken = out.token
	}
	res, err := w.Generate(r.Context(), req)
	switch {
	case err != nil && (errors.Is(err, context.Canceled) || errors.Is(err, errClientGone)):
		w.log.Debug("request abandoned by the client", "err", err)
	case err != nil && p.stream:
		w.log.Error("generation failed mid-stream", "err", err)
		out.fail(apiErrorFor(err, promptParam))
	case err != nil:
		w.log.Error("generation failed", "err", err)
		writeError(rw, apiErrorFor(err, promptParam))
	default:
		out.finish(res)
	}
}

// apiErrorFor maps Generate's errors to API errors, in one place.
func apiErrorFor(err error, promptParam string) *apiError {
	switch {
	case errors.Is(err, ErrEmptyPrompt):
		return badRequest(promptParam, "invalid_value", "the prompt is empty")
	case errors.Is(err, ErrPromptTooLong):
		return badRequest(promptParam, "context_length_exceeded", "%v", err)
	case errors.Is(err, ErrMaxTokens):
		return badRequest("max_tokens", "invalid_value", "%v", err)
	case errors.Is(err, ErrBadToken):
		return badRequest(promptParam, "invalid_value", "%v", err)
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Type: "server_error", Message: err.Error()}
	}
	return &apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: err.Error()}
}

func writeError(rw http.ResponseWriter, e *apiError) {
	writeJSON(rw, e.Status, map[string]*apiError{"error": e})
}

func writeJSON(rw http.ResponseWriter, status int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_ = json.NewEncoder(rw).Encode(v)
}

// instrument counts requests by endpoint and status code.
func (w *Worker) instrument(endpoint string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		sr := &statusRecorder{ResponseWriter: rw, code: http.StatusOK}
		h(sr, r)
		w.met.requests.WithLabelValues(endpoint, strconv.Itoa(sr.code)).Inc()
	})
}

type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the real writer's Flush.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func newID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func now() int64 { return time.Now().Unix() }
