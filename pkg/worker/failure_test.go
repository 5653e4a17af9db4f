package worker

import (
	"context"
	"encoding/binary"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// fault is what faultyCache does to fetched blocks.
type fault int32

const (
	passThrough fault = iota
	hang              // Lookup and FetchRaw block until their deadline
	flipByte          // block 2 has a flipped payload byte (checksum fails)
	wrongShape        // block 2 is intact but of another shape
	infValue          // block 2 is intact but holds an infinite value
)

// faultyCache wraps a real client and damages what it returns, after the
// client's own verification: the worker must not trust the client alone.
type faultyCache struct {
	Cache
	mode atomic.Int32
}

func (f *faultyCache) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	if fault(f.mode.Load()) == hang {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return f.Cache.Lookup(ctx, ns, keys)
}

func (f *faultyCache) FetchRawFunc(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst [][]byte, fn func(int, []byte) error) (int, error) {
	return f.Cache.FetchRawFunc(ctx, ns, keys, dst, f.damaging(fn))
}

func (f *faultyCache) FetchRawAfterFunc(ctx context.Context, ns prefix.Namespace, parent prefix.Key, keys []prefix.Key, dst [][]byte, fn func(int, []byte) error) (int, error) {
	return f.Cache.FetchRawAfterFunc(ctx, ns, parent, keys, dst, f.damaging(fn))
}

// damaging wraps fn so that block 2 reaches it damaged.
func (f *faultyCache) damaging(fn func(int, []byte) error) func(int, []byte) error {
	return func(i int, blk []byte) error {
		if i == 2 {
			blk = f.damage(blk)
		}
		return fn(i, blk)
	}
}

func (f *faultyCache) damage(blk []byte) []byte {
	switch fault(f.mode.Load()) {
	case flipByte:
		blk[len(blk)-1] ^= 0x40
	case wrongShape:
		s := kvblock.Shape{Tokens: 8, Layers: 1, KVHeads: 1, HeadDim: 16}
		kv := kvblock.KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
		h, _ := kvblock.ParseHeader(blk)
		b, err := kvblock.Encode(nil, &kv, kvblock.Meta{Codec: kvblock.F16, StartPos: h.StartPos, RoPE: true, Parent: h.Parent, HasParent: true, Sinks: -1})
		if err != nil {
			panic(err)
		}
		blk = b
	case infValue:
		// The encoders saturate, so forge it: an f16 block whose last
		// value (of V) is +Inf, with a correct checksum.
		var kv kvblock.KV
		h, err := kvblock.Decode(blk, &kv)
		if err != nil {
			panic(err)
		}
		b, err := kvblock.Encode(nil, &kv, kvblock.Meta{Codec: kvblock.F16, StartPos: h.StartPos, RoPE: true, Parent: h.Parent, HasParent: true, Sinks: -1})
		if err != nil {
			panic(err)
		}
		binary.LittleEndian.PutUint16(b[len(b)-2:], 0x7c00)
		var sum kvblock.Checksum
		sum.Write(b)
		binary.LittleEndian.PutUint32(b[60:], sum.Sum32())
		blk = b
	}
	return blk
}

// blackhole accepts TCP connections and never answers.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// refused returns an address nothing listens on.
func refused(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A cache that is down, hangs or serves bad blocks costs a recompute of the
// blocks it could not deliver, never a failed or late request.
func TestCacheFailuresOnlyCostRecompute(t *testing.T) {
	const b = 16
	prompt := textPrompt(9, 200)
	req := Request{Prompt: prompt, MaxTokens: 8}
	want, _ := run(t, newWorker(t, Config{BlockTokens: b}), req)

	tests := []struct {
		name       string
		cache      func(t *testing.T) (Cache, *faultyCache)
		fault      fault
		wantCached int
		wantErrOp  string
	}{
		{"node down", func(t *testing.T) (Cache, *faultyCache) { return newClient(t, refused(t)), nil }, passThrough, 0, ""},
		{"blackhole node", func(t *testing.T) (Cache, *faultyCache) { return newClient(t, blackhole(t)), nil }, passThrough, 0, "lookup"},
		{"hanging cache", faulty, hang, 0, "lookup"},
		{"flipped byte", faulty, flipByte, 2 * b, "decode"},
		{"wrong shape", faulty, wrongShape, 2 * b, "decode"},
		{"infinite value", faulty, infValue, 2 * b, "decode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache, f := tt.cache(t)
			w := newWorker(t, Config{Cache: cache, BlockTokens: b, LookupTimeout: 300 * time.Millisecond,
				FetchTimeout: 300 * time.Millisecond, PutTimeout: 500 * time.Millisecond})
			if f != nil { // fill the cache through the honest path first
				run(t, w, req)
				flush(t, w)
				f.mode.Store(int32(tt.fault))
			}
			start := time.Now()
			got, _ := run(t, w, req)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("request took %v despite 300ms cache deadlines", elapsed)
			}
			if got.CachedTokens != tt.wantCached {
				t.Errorf("cached tokens %d, want %d", got.CachedTokens, tt.wantCached)
			}
			if !equalInts(got.Tokens, want.Tokens) {
				t.Errorf("tokens %v, want %v", got.Tokens, want.Tokens)
			}
			if tt.wantErrOp != "" {
				if n := metricValue(t, w, "kvcache_worker_cache_errors_total", tt.wantErrOp); n < 1 {
					t.Errorf("cache errors{op=%s} = %v, want >= 1", tt.wantErrOp, n)
				}
			}
		})
	}
}

func faulty(t *testing.T) (Cache, *faultyCache) {
	_, c := startNode(t)
	f := &faultyCache{Cache: c}
	return f, f
}
