package worker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
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
//	GET  /v1/models/{id}       that model, or 404
//	POST /tokenize             llama.cpp server shape: content -> tokens
//	POST /detokenize           llama.cpp server shape: tokens -> content
//	GET  /healthz, /health     200 "ok"
//	GET  /metrics              Prometheus, the worker's own registry
//
// Invalid requests get HTTP 400 with an OpenAI error object, including an
// unknown model (OpenAI itself answers 404 there; we follow the issue's
// "bad input is a 400", with code "model_not_found" so clients can tell).
// An oversized body gets 413, a body not received within ReadTimeout 408,
// and a request beyond the wait queue 429 with Retry-After.
func (w *Worker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/completions", w.instrument("completions", w.handleCompletions))
	mux.Handle("POST /v1/chat/completions", w.instrument("chat", w.handleChat))
	mux.Handle("GET /v1/models", w.instrument("models", w.handleModels))
	mux.Handle("GET /v1/models/{id...}", w.instrument("models", w.handleModel))
	mux.Handle("POST /tokenize", w.instrument("tokenize", w.handleTokenize))
	mux.Handle("POST /detokenize", w.instrument("detokenize", w.handleDetokenize))
	health := func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = rw.Write([]byte("ok\n"))
	}
	mux.HandleFunc("GET /healthz", health)
	mux.HandleFunc("GET /health", health)
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(rw http.ResponseWriter, r *http.Request) {
		writeError(rw, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: "unknown endpoint " + r.Method + " " + r.URL.Path})
	})
	return mux
}

// NewServer returns an http.Server for Handler with the configured read
// and idle timeouts, so slow or idle clients cannot hold connections.
// There is no write timeout: a long generation streams for as long as it
// takes.
func (w *Worker) NewServer() *http.Server {
	return &http.Server{
		Handler:           w.Handler(),
		ReadHeaderTimeout: w.cfg.ReadHeaderTimeout,
		ReadTimeout:       w.cfg.ReadTimeout,
		IdleTimeout:       w.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(w.log.Handler(), slog.LevelDebug),
	}
}

func (w *Worker) modelObject() map[string]any {
	return map[string]any{
		"id": w.ModelID(), "object": "model", "created": 0, "owned_by": "kvcache",
		"context_length": w.info.ContextLen, "block_tokens": w.cfg.BlockTokens,
		"kv_bytes_per_token": w.m.KVBytesPerToken(), "codec": w.cfg.Codec.String(),
	}
}

func (w *Worker) handleModels(rw http.ResponseWriter, _ *http.Request) {
	writeJSON(rw, http.StatusOK, map[string]any{"object": "list", "data": []map[string]any{w.modelObject()}})
}

func (w *Worker) handleModel(rw http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != w.ModelID() {
		code := "model_not_found"
		writeError(rw, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: &code,
			Message: fmt.Sprintf("the model '%s' does not exist; this worker serves '%s'", id, w.ModelID())})
		return
	}
	writeJSON(rw, http.StatusOK, w.modelObject())
}

func (w *Worker) handleCompletions(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
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
	queued, ok := w.admitOrReject(rw, r)
	if !ok {
		return
	}
	defer w.admit.release()
	prompt, echo, e := w.promptTokens(r.Context(), req.Prompt, p.echo)
	if e != nil {
		writeError(rw, e)
		return
	}
	w.serve(rw, r, "prompt", prompt, p, defaultCompletionTokens, nil, nil, false, echo, queued)
	w.met.e2e.WithLabelValues("completions").Observe(time.Since(start).Seconds())
}

func (w *Worker) handleChat(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req chatRequest
	if e := decodeBody(rw, r, &req); e != nil {
		writeError(rw, e)
		return
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
	queued, ok := w.admitOrReject(rw, r)
	if !ok {
		return
	}
	defer w.admit.release()
	prompt, e := w.chatTokens(r.Context(), msgs)
	if e != nil {
		writeError(rw, e)
		return
	}
	tmpl, tok := w.m.ChatTemplate(), w.m.Tokenizer()
	stopIDs, stopText := templateStops(tok, tmpl)
	w.serve(rw, r, "messages", prompt, p, defaultChatTokens, stopIDs, stopText, true, "", queued)
	w.met.e2e.WithLabelValues("chat").Observe(time.Since(start).Seconds())
}

// admitOrReject takes a running place for the request, waiting in the
// queue; it answers 429 when the queue is full and gives up silently when
// the client left while waiting.
func (w *Worker) admitOrReject(rw http.ResponseWriter, r *http.Request) (time.Duration, bool) {
	queued, err := w.admit.acquire(r.Context())
	switch {
	case errors.Is(err, errQueueFull):
		code := "rate_limit_exceeded"
		rw.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
		writeError(rw, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: &code,
			Message: fmt.Sprintf("the worker is at capacity (%d requests running, %d waiting); retry after %d s", w.cfg.MaxRunning, w.cfg.MaxQueue, retryAfterSeconds)})
		return 0, false
	case err != nil:
		w.log.Debug("client left while queued", "err", err)
		return 0, false
	}
	return queued, true
}

// retryAfterSeconds is the Retry-After of a 429: a request runs for
// seconds on a CPU engine, so a place frees up within about that long.
const retryAfterSeconds = 1

// templateStops are the template's end-of-turn markers: those that are a
// single control token (e.g. <|im_end|>) are matched as tokens, the others
// (e.g. "\nuser:") as stop strings.
func templateStops(tok tokenizer.Tokenizer, tmpl tokenizer.Template) (ids []int, text []string) {
	for _, s := range tmpl.Stop() {
		if t := tok.EncodeSpecial(s); len(t) == 1 && tok.TokenBytes(t[0]) == nil {
			ids = append(ids, t[0])
		} else {
			text = append(text, s)
		}
	}
	return ids, text
}

// serve runs one generation and writes it as JSON or SSE.
func (w *Worker) serve(rw http.ResponseWriter, r *http.Request, promptParam string, prompt []int, p params, defTokens int, stopIDs []int, stopText []string, chat bool, echo string, queued time.Duration) {
	room := w.info.ContextLen - len(prompt)
	if p.maxTokens == 0 {
		p.maxTokens = max(1, min(defTokens, room))
	}
	// The template's markers come on top of the client's (at most MaxStop).
	req := Request{Prompt: prompt, MaxTokens: p.maxTokens, Temperature: p.temperature, TopP: p.topP, Seed: p.seed,
		StopTokens: stopIDs, Stop: append(slices.Clone(p.stop), stopText...), N: p.n, Logprobs: p.logprobs, TopLogprobs: p.topLogprobs,
		Isolation: Isolation(tenantOf(r.Context()), p.cacheSalt)}
	if err := w.validate(req); err != nil {
		writeError(rw, apiErrorFor(err, promptParam))
		return
	}
	if p.user != "" {
		w.log.Debug("request", "user", p.user, "prompt_tokens", len(prompt), "n", p.n)
	}
	out := newOutput(rw, w.ModelID(), chat, w.m.Tokenizer(), p, echo)
	if p.stream {
		if err := out.begin(); err != nil {
			return
		}
		req.OnDelta = out.delta
	}
	res, err := w.generate(r.Context(), req, nil)
	if res != nil {
		res.Timings.QueueMS = math.Round((res.Timings.QueueMS+float64(queued.Microseconds())/1e3)*1e3) / 1e3
	}
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
	case errors.Is(err, ErrBadOption):
		return badRequest("", "invalid_value", "%v", err)
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
