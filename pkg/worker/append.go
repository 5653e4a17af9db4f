package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// putBatch is how many blocks one background Put carries.
const putBatch = 32

// appendJob is a finished sequence whose blocks [from, to) were computed
// here and should be stored. The appender owns seq from then on: the
// request is done with it, so exporting needs no copy on the response path,
// and releases it (Sequence.Release) when done or dropped.
type appendJob struct {
	ns       prefix.Namespace // the request's (namespaceFor)
	seq      *model.Sequence
	tokens   []int // the sequence's tokens, at least to*B of them
	from, to int
	done     chan struct{} // closed when the job is done or dropped
}

// appender encodes and stores finished sequences' blocks on one background
// goroutine, off every request's path. Its queue is bounded; a full queue
// drops the job (a lost future hit, never a slower response).
type appender struct {
	w      *Worker
	jobs   chan appendJob
	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	pending int
	idle    chan struct{} // closed while pending == 0
	closed  bool

	nPending atomic.Int64 // mirror of pending for the metrics gauge
}

func newAppender(w *Worker) *appender {
	ctx, cancel := context.WithCancel(context.Background())
	a := &appender{
		w:      w,
		jobs:   make(chan appendJob, w.cfg.AppendQueue),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
		idle:   make(chan struct{}),
	}
	close(a.idle)
	go a.loop()
	return a
}

// appendLater queues the blocks of seq computed by this request: full
// blocks from the first one not fetched, up to the sequence's end (or the
// prompt's end with PromptOnly). The partial last block is never stored.
// The channel returned is closed once the job is done (its Puts answered
// or failed) or dropped; nil when nothing was queued.
func (w *Worker) appendLater(ns prefix.Namespace, seq *model.Sequence, prompt, generated []int, fetched int) <-chan struct{} {
	if w.appender == nil {
		return nil
	}
	n := seq.Len()
	if w.cfg.PromptOnly {
		n = min(n, len(prompt))
	}
	to := n / w.cfg.BlockTokens
	if to <= fetched {
		return nil
	}
	tokens := make([]int, 0, len(prompt)+len(generated))
	tokens = append(append(tokens, prompt...), generated...)
	j := appendJob{ns: ns, seq: seq, tokens: tokens[:to*w.cfg.BlockTokens], from: fetched, to: to, done: make(chan struct{})}
	w.appender.enqueue(j)
	return j.done
}

func (a *appender) enqueue(j appendJob) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		a.w.met.appendDropped.Add(float64(j.to - j.from))
		j.seq.Release()
		close(j.done)
		return
	}
	select {
	case a.jobs <- j:
		if a.pending == 0 {
			a.idle = make(chan struct{})
		}
		a.pending++
		a.nPending.Add(1)
	default:
		a.w.met.appendDropped.Add(float64(j.to - j.from))
		j.seq.Release()
		close(j.done)
	}
}

func (a *appender) finish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pending--
	a.nPending.Add(-1)
	if a.pending == 0 {
		close(a.idle)
	}
}

// Pending returns the jobs queued or running.
func (a *appender) Pending() int64 { return a.nPending.Load() }

func (a *appender) loop() {
	defer close(a.done)
	for j := range a.jobs {
		if err := a.store(j); err != nil {
			a.w.cacheError("append", err)
		}
		j.seq.Release()
		close(j.done)
		a.finish()
	}
}

// Flush waits until the jobs queued so far are done, or ctx ends.
func (a *appender) Flush(ctx context.Context) error {
	a.mu.Lock()
	idle := a.idle
	a.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("worker: flush: %w", ctx.Err())
	}
}

// Close stops accepting jobs and waits for the queued ones until ctx ends,
// then abandons the rest.
func (a *appender) Close(ctx context.Context) error {
	a.mu.Lock()
	if !a.closed {
		a.closed = true
		close(a.jobs)
	}
	a.mu.Unlock()
	select {
	case <-a.done:
		a.cancel()
		return nil
	case <-ctx.Done():
		a.cancel()
		<-a.done
		return fmt.Errorf("worker: close: appends abandoned: %w", ctx.Err())
	}
}

// store exports, encodes and Puts one job's blocks in batches.
func (a *appender) store(j appendJob) error {
	w := a.w
	b := w.cfg.BlockTokens
	keys := prefix.BlockKeys(j.ns, toU32(j.tokens[:j.to*b]), b)
	n := w.shape.Elements()
	kv := kvblock.KV{Shape: w.shape, K: make([]float32, n), V: make([]float32, n)}
	var errs []error
	batch := make([]client.Block, 0, putBatch)
	put := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(a.ctx, w.cfg.PutTimeout)
		err := w.cfg.Cache.Put(ctx, j.ns, batch)
		cancel()
		if err != nil {
			errs = append(errs, err)
		} else {
			w.met.appended.Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	for i := j.from; i < j.to; i++ {
		if err := j.seq.ExportBlock(i, kv.K, kv.V); err != nil {
			return fmt.Errorf("worker: export block %d: %w", i, err)
		}
		m := kvblock.Meta{Codec: w.cfg.Codec, StartPos: uint32(i * b), RoPE: true, Sinks: -1}
		if i > 0 {
			m.Parent, m.HasParent = keys[i-1], true
		}
		data, err := kvblock.Encode(nil, &kv, m)
		if err != nil {
			return fmt.Errorf("worker: encode block %d: %w", i, err)
		}
		batch = append(batch, client.Block{Key: keys[i], Data: data})
		if len(batch) == putBatch {
			put()
		}
	}
	put()
	return errors.Join(errs...)
}
