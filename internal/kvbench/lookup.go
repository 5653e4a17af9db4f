package kvbench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// lookupPhase stores a chain of LookupKeys small blocks (Lookup cost does
// not depend on block size) and times Lookup of the whole chain, all keys
// present, the worst case: rounds interleaved, samples pooled. A one-key
// Lookup on the same path, interleaved, gives the fixed cost of a call.
func (r *runner) lookupPhase(ctx context.Context) error {
	n := r.cfg.LookupKeys
	g := Geometry{Model: "kvbench/lookup", Layers: 1, KVHeads: 1, HeadDim: 8, BlockTokens: r.cfg.Geometry.BlockTokens, Codec: kvblock.Int8}
	ns, err := g.Namespace()
	if err != nil {
		return err
	}
	enc := NewEncoder(g, 3)
	keys := make([]prefix.Key, n)
	blocks := make([]client.Block, n)
	tokens := make([]uint32, g.BlockTokens)
	parent, has := ns.Root(), false
	for i := range n {
		fillTokens(tokens, 11, 0, i)
		k := prefix.Next(parent, tokens)
		b := Block{Key: k, HasParent: has, Pos: uint32(i * g.BlockTokens), Seed: uint64(i)}
		if has {
			b.Parent = parent
		}
		data, err := enc.Encode(nil, b)
		if err != nil {
			return err
		}
		keys[i], blocks[i] = k, client.Block{Key: k, Data: data}
		parent, has = k, true
	}
	bs := r.backends()[:r.populateBackends()]
	for _, b := range bs {
		for i := 0; i < n; i += 64 {
			if err := b.Put(ctx, ns, blocks[i:min(n, i+64)]); err != nil {
				return fmt.Errorf("%s: store lookup chain: %w", b.Name(), err)
			}
		}
	}
	cols := make([]int, len(bs))
	for i := range bs {
		cols[i] = i
	}
	if r.kvRPC != nil { // same nodes as kvcache: Lookup over gRPC, side by side
		bs = slices.Insert(bs, 1, r.kvRPC)
		cols = slices.Insert(cols, 1, colGRPC)
	}
	// The same call with one key, interleaved with the full one, is the
	// fixed cost of a call on this machine (RPC, scheduling): what a p99
	// of the 512-key call cannot go below, measured in the same run.
	samples := make([][]time.Duration, len(bs))
	floor := make([][]time.Duration, len(bs))
	measure := func(b Backend, keys []prefix.Key, d time.Duration, into *[]time.Duration, label string) error {
		r.p.begin(label, 0)
		defer r.p.end()
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			t0 := time.Now()
			got, err := b.Lookup(ctx, ns, keys)
			el := time.Since(t0)
			if err != nil {
				return fmt.Errorf("%s lookup: %w", b.Name(), err)
			}
			if got != len(keys) {
				return fmt.Errorf("%s lookup: %d of %d keys present", b.Name(), got, len(keys))
			}
			*into = append(*into, el)
			r.p.add(1, 0)
		}
		return nil
	}
	for round := range r.cfg.Rounds {
		for bi, b := range bs {
			if err := measure(b, keys, r.cfg.Duration/2, &samples[bi], fmt.Sprintf("lookup %d keys: %s (round %d)", n, b.Name(), round+1)); err != nil {
				return err
			}
			if err := measure(b, keys[:1], r.cfg.Duration/4, &floor[bi], fmt.Sprintf("lookup 1 key: %s (round %d)", b.Name(), round+1)); err != nil {
				return err
			}
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	phase := fmt.Sprintf("lookup %d keys (all present), 1 caller", n)
	p50, p99 := newRow(phase, "p50", "ms"), newRow(phase, "p99", "ms")
	floorPhase := "lookup 1 key (the fixed cost of a call), 1 caller"
	f50, f99 := newRow(floorPhase, "p50", "ms"), newRow(floorPhase, "p99", "ms")
	p50.Lower, p99.Lower, f50.Lower, f99.Lower = true, true, true, true
	for bi := range bs {
		setCol(&p50, cols[bi], ms(Percentile(samples[bi], 50)))
		setCol(&p99, cols[bi], ms(Percentile(samples[bi], 99)))
		setCol(&f50, cols[bi], ms(Percentile(floor[bi], 50)))
		setCol(&f99, cols[bi], ms(Percentile(floor[bi], 99)))
		r.rep.Samples[fmt.Sprintf("lookup/%s/count", bs[bi].Name())] = []float64{float64(len(samples[bi]))}
	}
	p99.Target = "<= 1 ms"
	r.rep.Rows = append(r.rep.Rows, p50, p99, f50, f99)
	return nil
}
