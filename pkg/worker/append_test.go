package worker

import (
	"context"
	"testing"
	"time"
)

// The appender never blocks a request: with a node that never answers and
// a queue of 4, 200 finished sequences are queued or dropped at once, and
// the dropped blocks are counted. (Moved from pkg/client's
// TestAppendAsyncNeverBlocks when the client's own appender went.)
func TestAppendNeverBlocks(t *testing.T) {
	const b = 16
	w := newWorker(t, Config{Cache: newClient(t, blackhole(t)), BlockTokens: b, AppendQueue: 4, PutTimeout: 100 * time.Millisecond})
	prompt := textPrompt(3, 2*b+5)
	seq := w.cfg.Model.NewSequence(b)
	if _, err := seq.Prefill(context.Background(), prompt); err != nil {
		t.Fatal(err)
	}
	const jobs = 200
	done := make(chan struct{})
	// Each job gets its own copy: the appender releases the sequence it
	// is given.
	go func() {
		for range jobs {
			w.appendLater(w.ns, seq.Fork(), prompt, nil, 0)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("appendLater blocked on a node that never answers")
	}
	dropped := metricValue(t, w, "kvcache_worker_append_dropped_blocks_total", "")
	if dropped == 0 || dropped > 2*jobs || int(dropped)%2 != 0 {
		t.Errorf("dropped %v blocks of %d jobs of 2 blocks: want some, whole jobs", dropped, jobs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_ = w.Close(ctx)                                // may abandon the queued jobs
	w.appendLater(w.ns, seq.Fork(), prompt, nil, 0) // after Close: dropped, no panic
	if got := metricValue(t, w, "kvcache_worker_append_dropped_blocks_total", ""); got != dropped+2 {
		t.Errorf("append after Close: dropped %v, want %v", got, dropped+2)
	}
}
