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
	// MaxTokens bounds the generated tokens of each choice: 1 <= MaxTokens
	// <= context - len(Prompt).
	MaxTokens int
	// Temperature 0 (or less) is greedy; TopP in (0,1) enables nucleus
	// sampling; Seed makes sampling reproducible (choice i samples with
	// Seed+i, so choices differ and each is reproducible).
	Temperature, TopP float64
	Seed              uint64
	// StopTokens end a choice (they are not returned). The tokenizer's EOS
	// always does.
	StopTokens []int
	// Stop strings end a choice where its text first contains one; the
	// text from the stop string on is not returned. At most MaxStopStrings
	// (the API allows a client MaxStop and adds the chat template's).
	Stop []string
	// N is the number of choices (0 means 1), at most MaxN. They share the
	// prompt: it is restored and prefilled once, then forked.
	N int
	// Logprobs asks for each returned token's log probability, with the
	// TopLogprobs (0..MaxTopLogprobs) most likely alternatives.
	Logprobs    bool
	TopLogprobs int
	// OnDelta, when set, is called with each piece of settled text as soon
	// as it is known (for streaming), and once with the finish reason as
	// each choice ends. An error from it aborts the request. The deltas of
	// a choice concatenate to its Choice.
	OnDelta func(Delta) error
	// Isolation is folded into the cache namespace of this request
	// (docs/keys.md, "Request salt"): requests with different values share
	// no blocks. "" uses the worker's namespace. The HTTP API sets it from
	// the API key's tenant and the request's cache_salt (Isolation func).
	Isolation string
}

// Limits of a Request.
const (
	MaxN           = 16 // choices per request; each holds a copy of the prompt's KV
	MaxStop        = 4  // stop strings a client may send, as OpenAI allows
	MaxStopStrings = 16 // stop strings of a Request
)

// Delta is a piece of one choice's output.
type Delta struct {
	Choice       int
	Text         string
	Logprobs     []TokenLogprob
	FinishReason string // set on the choice's last delta only
}

// Choice is one finished completion of the prompt.
type Choice struct {
	Index int
	// Text is what the choice returns: its tokens' bytes concatenated, cut
	// before a stop string.
	Text string
	// Tokens are every generated token, including those that spelled a
	// stop string (they were computed and count as usage); a stop token
	// or EOS is excluded.
	Tokens []int
	// FinishReason is "stop" (EOS, a stop token or a stop string) or
	// "length" (MaxTokens).
	FinishReason string
	// Logprobs, when asked for, has one entry per token of Text.
	Logprobs []TokenLogprob
}

// Result is a finished generation.
type Result struct {
	// Tokens and FinishReason are those of Choices[0].
	Tokens       []int
	FinishReason string
	Choices      []Choice
	PromptTokens int
	// CachedTokens are prompt tokens whose KV came from the cache.
	CachedTokens int
	Timings      Timings
}

// completionTokens is the usage count: generated tokens of every choice.
func (r *Result) completionTokens() int {
	n := 0
	for _, c := range r.Choices {
		n += len(c.Tokens)
	}
	return n
}

// Timings break a request down. Durations are milliseconds.
type Timings struct {
	QueueMS          float64 `json:"queue_ms"`         // waiting for admission and the first forward-pass slot
	LookupMS         float64 `json:"lookup_ms"`        // cache Lookup
	FetchMS          float64 `json:"fetch_ms"`         // cache fetch, decode and import
	ImportMS         float64 `json:"import_ms"`        // the part of fetch_ms spent decoding and importing the fetched blocks (as they arrive: it overlaps the transfer)
	FetchedBlocks    int     `json:"fetched_blocks"`   // blocks imported from the cache
	FetchedBytes     int     `json:"fetched_bytes"`    // encoded bytes received for them
	HotMS            float64 `json:"hot_cache_ms"`     // looking up and importing blocks of the worker's hot tier
	HotBlocks        int     `json:"hot_cache_blocks"` // blocks imported from the hot tier (not fetched)
	HotTokens        int     `json:"hot_cache_tokens"` // prompt tokens whose KV came from the hot tier
	PrefillMS        float64 `json:"prefill_ms"`
	PrefillTokens    int     `json:"prefill_tokens"` // prompt tokens computed here
	DecodeMS         float64 `json:"decode_ms"`
	DecodeTokens     int     `json:"decode_tokens"` // forward passes after the first token, all choices
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

// logitsHook observes the logits each sampled token of choice 0 was drawn
// from (step 0 is the prompt's last position). Only tests pass one.
type logitsHook func(step int, logits []float32)

// choiceRun is one choice being decoded.
type choiceRun struct {
	Choice
	seq     *model.Sequence
	sampler *model.Sampler
	logits  []float32
	text    *textState
	pending []TokenLogprob // computed, not yet released with their text
	ends    []int          // byte end of each pending token's text
	last    time.Time      // when its previous token was sampled
	done    bool
}

func (w *Worker) generate(ctx context.Context, req Request, hook logitsHook) (res *Result, err error) {
	start := time.Now()
	if err := w.validate(req); err != nil {
		return nil, err
	}
	res = &Result{PromptTokens: len(req.Prompt)}
	t := &res.Timings
	seq := w.m.NewSequence(w.cfg.BlockTokens)
	ns := w.namespaceFor(req.Isolation)
	var held heldBlocks // fetched for the tier: copied in after the first token
	fetched := w.restore(ctx, ns, seq, req.Prompt, t, &held)
	res.CachedTokens = seq.Len()
	runs := make([]*choiceRun, max(1, req.N))
	// Whatever this request computed is worth storing, even if it fails
	// or the client goes away half-way through decoding. Choice 0 carries
	// the prompt's blocks; the other choices' completions are not stored.
	defer func() {
		var gen []int
		if runs[0] != nil {
			gen = runs[0].Tokens
		}
		w.keepFetchedAsync(&held) // the answer is about to go out
		w.keepHot(ns, seq, req.Prompt, gen, fetched)
		done := w.appendLater(ns, seq, req.Prompt, gen, fetched)
		if done == nil {
			// Nothing queued holds seq: its KV buffers serve the next
			// request (the appender releases a queued one when done).
			seq.Release()
		}
		w.waitAppend(ctx, done)
	}()
	defer func() { res.collect(runs) }()

	t0 := time.Now()
	logits, err := w.prefill(ctx, seq, req.Prompt[seq.Len():], t)
	if err != nil {
		return res, err
	}
	t.PrefillMS = msSince(t0) - t.QueueMS
	t.PrefillTokens = len(req.Prompt) - res.CachedTokens
	w.met.prefilled(t.PrefillTokens, t.PrefillMS)

	for i := range runs {
		r := &choiceRun{Choice: Choice{Index: i}, seq: seq, logits: logits, text: newTextState(req.Stop),
			sampler: model.NewSampler(req.Temperature, req.TopP, req.Seed+uint64(i))}
		if i > 0 {
			r.seq = seq.Fork() // the prompt's KV, computed once
		}
		runs[i] = r
	}
	t1 := time.Now()
	for step, active := 0, len(runs); active > 0; step++ {
		for _, r := range runs {
			if r.done {
				continue
			}
			if hook != nil && r.Index == 0 {
				hook(step, r.logits)
			}
			if step == 0 && r.Index == 0 {
				t.TTFTMS = msSince(start)
				w.met.ttft.Observe(t.TTFTMS / 1e3)
				t1 = time.Now()
			}
			if err := w.step(ctx, &req, r, t); err != nil {
				return res, err
			}
			if r.done {
				active--
			}
		}
		if step == 0 {
			// The first token is out: now the tier's copy of the
			// fetched blocks costs no time to it.
			w.keepFetchedAsync(&held)
		}
	}
	t.DecodeMS = msSince(t1)
	if t.DecodeMS > 0 {
		t.DecodeTokensPerS = float64(t.DecodeTokens) / (t.DecodeMS / 1e3)
		w.met.decodeRate.Observe(t.DecodeTokensPerS)
	}
	t.round()
	res.collect(runs)
	w.met.observe(res)
	return res, nil
}

// step samples one token of a choice, releases the text it settles, and
// runs the forward pass for the next one unless the choice ended.
func (w *Worker) step(ctx context.Context, req *Request, r *choiceRun, t *Timings) error {
	tok := r.sampler.Sample(r.logits)
	now := time.Now()
	if !r.last.IsZero() {
		w.met.itl.Observe(now.Sub(r.last).Seconds())
	}
	r.last = now
	if tok == w.m.Tokenizer().EOS() || slices.Contains(req.StopTokens, tok) {
		return w.finish(req, r, r.text.flush(), "stop", false)
	}
	r.Tokens = append(r.Tokens, tok)
	w.met.genTokens.Inc()
	b := w.m.Tokenizer().TokenBytes(tok)
	if req.Logprobs {
		lp, top := logprobOf(r.logits, tok, req.TopLogprobs)
		r.pending = append(r.pending, TokenLogprob{Token: tok, Logprob: lp, Top: top, Start: len(r.text.full)})
		r.ends = append(r.ends, len(r.text.full)+len(b))
	}
	s, stopped := r.text.push(b)
	switch {
	case stopped:
		return w.finish(req, r, s, "stop", true)
	case len(r.Tokens) >= req.MaxTokens:
		return w.finish(req, r, s+r.text.flush(), "length", false)
	}
	// Release the logprobs of tokens whose text is now entirely out.
	n := 0
	for n < len(r.pending) && r.ends[n] <= r.text.emitted {
		n++
	}
	if err := r.emit(req, Delta{Choice: r.Index, Text: s, Logprobs: r.take(n)}); err != nil {
		return err
	}
	var err error
	if r.logits, err = w.forward(ctx, r.seq, []int{tok}); err != nil {
		return err
	}
	t.DecodeTokens++
	return nil
}

// finish ends a choice with its last text and reason. After a stop string
// the tokens that only spelled it are dropped from the logprobs.
func (w *Worker) finish(req *Request, r *choiceRun, s, reason string, stopString bool) error {
	n := len(r.pending)
	if stopString {
		n = 0
		for n < len(r.pending) && r.pending[n].Start < r.text.textLen() {
			n++
		}
	}
	r.done = true
	r.FinishReason = reason
	return r.emit(req, Delta{Choice: r.Index, Text: s, Logprobs: r.take(n), FinishReason: reason})
}

// take removes and returns the first n pending logprobs (nil if none).
func (r *choiceRun) take(n int) []TokenLogprob {
	if n == 0 {
		return nil
	}
	out := slices.Clone(r.pending[:n])
	r.pending, r.ends = r.pending[n:], r.ends[n:]
	return out
}

// emit records a delta in the choice and sends it to the stream.
func (r *choiceRun) emit(req *Request, d Delta) error {
	if d.Text == "" && d.Logprobs == nil && d.FinishReason == "" {
		return nil
	}
	r.Text += d.Text
	r.Logprobs = append(r.Logprobs, d.Logprobs...)
	if req.OnDelta != nil {
		return req.OnDelta(d)
	}
	return nil
}

// collect fills the result's choices from the runs (partial on error).
func (res *Result) collect(runs []*choiceRun) {
	res.Choices = res.Choices[:0]
	for _, r := range runs {
		if r != nil {
			res.Choices = append(res.Choices, r.Choice)
		}
	}
	if len(res.Choices) > 0 {
		res.Tokens, res.FinishReason = res.Choices[0].Tokens, res.Choices[0].FinishReason
	}
}

// round keeps microsecond precision, dropping float noise from the JSON.
func (t *Timings) round() {
	for _, p := range []*float64{&t.QueueMS, &t.LookupMS, &t.FetchMS, &t.ImportMS, &t.HotMS, &t.PrefillMS, &t.DecodeMS, &t.DecodeTokensPerS, &t.TTFTMS} {
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
	case req.N < 0 || req.N > MaxN:
		return fmt.Errorf("%w: n = %d, must be between 1 and %d", ErrBadOption, req.N, MaxN)
	case len(req.Stop) > MaxStopStrings:
		return fmt.Errorf("%w: %d stop strings, at most %d", ErrBadOption, len(req.Stop), MaxStopStrings)
	case req.TopLogprobs < 0 || req.TopLogprobs > MaxTopLogprobs:
		return fmt.Errorf("%w: top_logprobs = %d, must be between 0 and %d", ErrBadOption, req.TopLogprobs, MaxTopLogprobs)
	}
	for _, s := range req.Stop {
		if s == "" {
			return fmt.Errorf("%w: empty stop string", ErrBadOption)
		}
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
