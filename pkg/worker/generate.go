package worker

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/kvcache/kvcache/pkg/model"
)

// Request is one generation on token ids.
type Request struct {
	// Prompt is the tokenized prompt (BOS included if the model wants it).
	Prompt []int
	// MaxTokens bounds the generated tokens: 1 <= MaxTokens <= context -
	// len(Prompt).
	MaxTokens int
	// Temperature 0 (or less) is greedy; TopP in (0,1) enables nucleus
	// sampling; Seed makes sampling reproducible.
	Temperature, TopP float64
	Seed              uint64
	// StopTokens end generation (they are not returned). The tokenizer's
	// EOS always does.
	StopTokens []int
	// OnToken, when set, is called with each generated token as soon as it
	// is sampled (for streaming). An error from it aborts the request.
	OnToken func(token int) error
	// Isolation is folded into the cache namespace of this request
	// (docs/keys.md, "Request salt"): requests with different values share
	// no blocks. "" uses the worker's namespace. The HTTP API sets it from
	// the API key's tenant and the request's cache_salt (Isolation func).
	Isolation string
}

// Result is a finished generation.
type Result struct {
	Tokens       []int  // generated tokens, stop token excluded
	FinishReason string // "stop" (a stop token) or "length" (MaxTokens)
	PromptTokens int
	// CachedTokens are prompt tokens whose KV came from the cache.
	CachedTokens int
	Timings      Timings
}

// Timings break a request down. Durations are milliseconds.
type Timings struct {
	QueueMS          float64 `json:"queue_ms"`       // waiting for the first forward-pass slot
	LookupMS         float64 `json:"lookup_ms"`      // cache Lookup
	FetchMS          float64 `json:"fetch_ms"`       // cache fetch, decode and import
	FetchedBlocks    int     `json:"fetched_blocks"` // blocks imported from the cache
	FetchedBytes     int     `json:"fetched_bytes"`  // encoded bytes received for them
	PrefillMS        float64 `json:"prefill_ms"`
	PrefillTokens    int     `json:"prefill_tokens"` // prompt tokens computed here
	DecodeMS         float64 `json:"decode_ms"`
	DecodeTokens     int     `json:"decode_tokens"` // forward passes after the first token
	DecodeTokensPerS float64 `json:"decode_tokens_per_s"`
	TTFTMS           float64 `json:"ttft_ms"` // request start to first token sampled
}

// Generate serves one request: restore the longest cached prefix, prefill
// the rest, decode, and queue the newly computed blocks for appending.
// Cache failures never make it fail; invalid requests fail with the
// package's sentinel errors (and a nil Result), and a cancelled ctx with
// its error and the partial Result.
func (w *Worker) Generate(ctx context.Context, req Request) (*Result, error) {
	return w.generate(ctx, req, nil)
}

// logitsHook observes the logits each sampled token was drawn from (step 0
// is the prompt's last position). Only tests pass one.
type logitsHook func(step int, logits []float32)

func (w *Worker) generate(ctx context.Context, req Request, hook logitsHook) (res *Result, err error) {
	start := time.Now()
	if err := w.validate(req); err != nil {
		return nil, err
	}
	res = &Result{PromptTokens: len(req.Prompt)}
	t := &res.Timings
	seq := w.m.NewSequence(w.cfg.BlockTokens)
	ns := w.namespaceFor(req.Isolation)
	fetched := w.restore(ctx, ns, seq, req.Prompt, t)
	res.CachedTokens = seq.Len()
	// Whatever this request computed is worth storing, even if it fails
	// or the client goes away half-way through decoding.
	defer func() { w.appendLater(ns, seq, req.Prompt, res.Tokens, fetched) }()

	t0 := time.Now()
	logits, err := w.prefill(ctx, seq, req.Prompt[seq.Len():], t)
	if err != nil {
		return res, err
	}
	t.PrefillMS = msSince(t0) - t.QueueMS
	t.PrefillTokens = len(req.Prompt) - res.CachedTokens

	sampler := model.NewSampler(req.Temperature, req.TopP, req.Seed)
	eos := w.m.Tokenizer().EOS()
	t1 := time.Now()
	for step := 0; ; step++ {
		if hook != nil {
			hook(step, logits)
		}
		tok := sampler.Sample(logits)
		if step == 0 {
			t.TTFTMS = msSince(start)
			w.met.ttft.Observe(t.TTFTMS / 1e3)
			t1 = time.Now()
		}
		if tok == eos || slices.Contains(req.StopTokens, tok) {
			res.FinishReason = "stop"
			break
		}
		res.Tokens = append(res.Tokens, tok)
		if req.OnToken != nil {
			if err := req.OnToken(tok); err != nil {
				return res, err
			}
		}
		if len(res.Tokens) >= req.MaxTokens {
			res.FinishReason = "length"
			break
		}
		if logits, err = w.forward(ctx, seq, []int{tok}); err != nil {
			return res, err
		}
		t.DecodeTokens++
	}
	t.DecodeMS = msSince(t1)
	if t.DecodeMS > 0 {
		t.DecodeTokensPerS = float64(t.DecodeTokens) / (t.DecodeMS / 1e3)
	}
	t.round()
	w.met.observe(res)
	return res, nil
}

// round keeps microsecond precision, dropping float noise from the JSON.
func (t *Timings) round() {
	for _, p := range []*float64{&t.QueueMS, &t.LookupMS, &t.FetchMS, &t.PrefillMS, &t.DecodeMS, &t.DecodeTokensPerS, &t.TTFTMS} {
		*p = math.Round(*p*1e3) / 1e3
	}
}

// validate checks a request against the model before any work is done.
func (w *Worker) validate(req Request) error {
	ctxLen, vocab := w.info.ContextLen, w.info.Vocab
	switch {
	case len(req.Prompt) == 0:
		return ErrEmptyPrompt
	case len(req.Prompt) >= ctxLen:
		return fmt.Errorf("%w: %d prompt tokens, context holds %d including at least one generated token", ErrPromptTooLong, len(req.Prompt), ctxLen)
	case req.MaxTokens < 1 || req.MaxTokens > ctxLen-len(req.Prompt):
		return fmt.Errorf("%w: %d, must be between 1 and %d for a %d-token prompt", ErrMaxTokens, req.MaxTokens, ctxLen-len(req.Prompt), len(req.Prompt))
	}
	for i, tok := range req.Prompt {
		if tok < 0 || tok >= vocab {
			return fmt.Errorf("%w: token %d at index %d, vocabulary has %d", ErrBadToken, tok, i, vocab)
		}
	}
	return nil
}

// prefill computes tokens in chunks, taking the forward-pass semaphore per
// chunk so that other requests interleave. It returns the last logits.
func (w *Worker) prefill(ctx context.Context, seq *model.Sequence, tokens []int, t *Timings) ([]float32, error) {
	var logits []float32
	for first := true; len(tokens) > 0; first = false {
		n := min(len(tokens), w.cfg.PrefillChunk)
		q := time.Now()
		if err := w.acquire(ctx); err != nil {
			return nil, err
		}
		if first {
			t.QueueMS = msSince(q)
		}
		var err error
		logits, err = seq.Prefill(ctx, tokens[:n])
		w.release()
		if err != nil {
			return nil, fmt.Errorf("worker: prefill: %w", err)
		}
		tokens = tokens[n:]
	}
	return logits, nil
}

// forward runs one forward pass under the semaphore.
func (w *Worker) forward(ctx context.Context, seq *model.Sequence, tokens []int) ([]float32, error) {
	if err := w.acquire(ctx); err != nil {
		return nil, err
	}
	defer w.release()
	logits, err := seq.Prefill(ctx, tokens)
	if err != nil {
		return nil, fmt.Errorf("worker: decode: %w", err)
	}
	return logits, nil
}

func (w *Worker) acquire(ctx context.Context) error {
	select {
	case w.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("worker: waiting for a forward pass: %w", ctx.Err())
	}
}

func (w *Worker) release() { <-w.sem }

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1e3 }
