package worker

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// scribblePool overwrites every buffer the worker's fetch pool holds
// (0xff: an f16 NaN, which no import accepts) and puts them back.
func scribblePool(w *Worker) int {
	var bufs []*[]byte
	for range 10000 {
		p, _ := w.fetchBufs.Get().(*[]byte)
		if p == nil {
			break
		}
		b := (*p)[:cap(*p)]
		for i := range b {
			b[i] = 0xff
		}
		bufs = append(bufs, p)
	}
	for _, p := range bufs {
		w.fetchBufs.Put(p)
	}
	return len(bufs)
}

// With the tier on, blocks are fetched into pooled buffers that go back to
// the pool once the tier has its own copy: nothing the tier holds may
// alias one. After the request every pooled buffer is overwritten and
// another prompt is fetched into them; the tier's blocks still give a hit
// bit-identical to a miss, and no request keeps a buffer held.
func TestHotTierOwnsFetchedBlocks(t *testing.T) {
	_, c := startNode(t)
	plain := newWorker(t, Config{BlockTokens: hotB})
	filler := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB})
	w := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	a, other := textPrompt(51, 6*hotB+2), textPrompt(52, 6*hotB+2)
	req := func(p []int) Request { return Request{Prompt: p, MaxTokens: 8} }
	want, wantLogits := run(t, plain, req(a))
	run(t, filler, req(a))
	run(t, filler, req(other))
	flush(t, filler)

	steps := []struct {
		name         string
		p            []int
		hot, fetched int
	}{
		{"first: fetched", a, 0, 6},
		{"another prompt, fetched into the recycled buffers", other, 0, 6},
		{"first again: from the tier", a, 6, 0},
	}
	for _, s := range steps {
		res, logits := run(t, w, req(s.p))
		if res.Timings.HotBlocks != s.hot || res.Timings.FetchedBlocks != s.fetched {
			t.Fatalf("%s: %d hot, %d fetched blocks; want %d, %d", s.name, res.Timings.HotBlocks, res.Timings.FetchedBlocks, s.hot, s.fetched)
		}
		w.copies.Wait() // the tier's copies run just after the answer
		if n := w.heldBufs.Load(); n != 0 {
			t.Fatalf("%s: %d blocks still held after the request", s.name, n)
		}
		if &s.p[0] == &a[0] {
			if !equalInts(res.Tokens, want.Tokens) {
				t.Fatalf("%s: tokens %v, want %v", s.name, res.Tokens, want.Tokens)
			}
			sameLogits(t, s.name, logits, wantLogits)
		}
		scribblePool(w)
	}
}

// cancelAt cancels the request's context as block at is handed over
// (which is still imported: the fetch stops before the next one).
type cancelAt struct {
	Cache
	at     int
	cancel context.CancelFunc
	armed  atomic.Bool
}

func (c *cancelAt) wrap(fn func(int, []byte) error) func(int, []byte) error {
	return func(i int, blk []byte) error {
		if i == c.at && c.armed.Load() {
			c.cancel()
		}
		return fn(i, blk)
	}
}

func (c *cancelAt) FetchRawFunc(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst [][]byte, fn func(int, []byte) error) (int, error) {
	return c.Cache.FetchRawFunc(ctx, ns, keys, dst, c.wrap(fn))
}

func (c *cancelAt) FetchRawAfterFunc(ctx context.Context, ns prefix.Namespace, parent prefix.Key, keys []prefix.Key, dst [][]byte, fn func(int, []byte) error) (int, error) {
	return c.Cache.FetchRawAfterFunc(ctx, ns, parent, keys, dst, c.wrap(fn))
}

// A request whose fetch fails part-way (a damaged block) or that is
// cancelled during it gives back every buffer it held and puts into the
// tier exactly the blocks it imported whole: the next request hits the
// tier for those and is bit-identical to a miss.
func TestHotTierAfterFailedFetch(t *testing.T) {
	cases := []struct {
		name      string
		fault     fault // for faultyCache; cancelAt otherwise
		cancel    bool
		fetched   int
		wantError bool
	}{
		{name: "damaged block 2", fault: flipByte, fetched: 2},
		{name: "wrong shape block 2", fault: wrongShape, fetched: 2},
		{name: "cancelled at block 3", cancel: true, fetched: 4, wantError: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, c := startNode(t)
			plain := newWorker(t, Config{BlockTokens: hotB})
			filler := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB})
			p := textPrompt(61, 6*hotB+2)
			run(t, filler, Request{Prompt: p, MaxTokens: 1})
			flush(t, filler)
			want, wantLogits := run(t, plain, Request{Prompt: p, MaxTokens: 8})

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			fc := &faultyCache{Cache: c}
			fc.mode.Store(int32(tc.fault))
			ca := &cancelAt{Cache: c, at: 3, cancel: cancel}
			ca.armed.Store(tc.cancel)
			var cache Cache = fc
			if tc.cancel {
				cache = ca
			}
			w := newWorker(t, Config{Cache: cache, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
			res, err := w.generate(ctx, Request{Prompt: p, MaxTokens: 1}, nil)
			if tc.wantError != (err != nil) || (err != nil && !errors.Is(err, context.Canceled)) {
				t.Fatalf("generate: %v", err)
			}
			if res.Timings.FetchedBlocks != tc.fetched {
				t.Fatalf("%d fetched blocks, want %d", res.Timings.FetchedBlocks, tc.fetched)
			}
			w.copies.Wait()
			if n := w.heldBufs.Load(); n != 0 {
				t.Fatalf("%d blocks still held after the request", n)
			}
			scribblePool(w)
			// Healthy again: what the tier holds must be right.
			fc.mode.Store(int32(passThrough))
			ca.armed.Store(false)
			hot := tc.fetched
			if !tc.wantError {
				hot = 6 // the rest was computed, and kept, by the request
			}
			res, logits := run(t, w, Request{Prompt: p, MaxTokens: 8})
			if res.Timings.HotBlocks != hot {
				t.Fatalf("next request: %d hot blocks, want %d (timings %+v)", res.Timings.HotBlocks, hot, res.Timings)
			}
			if !equalInts(res.Tokens, want.Tokens) {
				t.Fatalf("next request: tokens %v, want %v", res.Tokens, want.Tokens)
			}
			sameLogits(t, "next request", logits, wantLogits)
		})
	}
}

// The tier's copy of fetched blocks runs after the answer. The same
// prompt sent again while it is still in flight (held back here by
// copyHook) imports the blocks from the fetch buffers themselves: all from
// the worker, none fetched again, bit-identical to a miss; once the copy
// ends they come from the tier and no buffer is still held.
func TestHotTierServesBlocksBeingCopied(t *testing.T) {
	_, c := startNode(t)
	plain := newWorker(t, Config{BlockTokens: hotB})
	filler := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB})
	p := textPrompt(71, 6*hotB+2)
	req := Request{Prompt: p, MaxTokens: 4}
	want, wantLogits := run(t, plain, req)
	run(t, filler, req)
	flush(t, filler)

	w := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	gate, started := make(chan struct{}), make(chan struct{}, 4)
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	t.Cleanup(release)
	w.copyHook = func() { started <- struct{}{}; <-gate }
	if res, _ := run(t, w, req); res.Timings.FetchedBlocks != 6 {
		t.Fatalf("first request fetched %d blocks, want 6", res.Timings.FetchedBlocks)
	}
	<-started // its copy is in flight, held at the gate
	check := func(name string) {
		t.Helper()
		res, logits := run(t, w, req)
		if res.Timings.HotBlocks != 6 || res.Timings.FetchedBlocks != 0 {
			t.Fatalf("%s: %d hot, %d fetched blocks; want 6, 0", name, res.Timings.HotBlocks, res.Timings.FetchedBlocks)
		}
		if !equalInts(res.Tokens, want.Tokens) {
			t.Fatalf("%s: tokens %v, want %v", name, res.Tokens, want.Tokens)
		}
		sameLogits(t, name, logits, wantLogits)
	}
	check("while the copy is held")
	if n := w.heldBufs.Load(); n != 6 {
		t.Fatalf("%d blocks held while the copy waits, want 6", n)
	}
	release()
	w.copies.Wait()
	if n := w.heldBufs.Load(); n != 0 {
		t.Fatalf("%d blocks still held after the copy", n)
	}
	scribblePool(w) // the tier must not alias a recycled buffer
	check("after the copy")
}
