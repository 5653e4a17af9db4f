package kvbench

import (
	"fmt"

	"github.com/kvcache/kvcache/internal/fidelity"
	"github.com/kvcache/kvcache/pkg/kvblock"
)

// fidelityPhase reports, for every codec, the KV bytes per token of the
// run's geometry (what `kvctl size --block-tokens B` prints) beside the
// fidelity of its decoded KV: the mean cosine between attention outputs
// from the original and the decoded KV, on synthetic post-RoPE keys with
// outlier channels (internal/fidelity, the measure pkg/kvblock's
// TestAttentionFidelity judges codecs by, on the same shape and seeds).
func (r *runner) fidelityPhase() error {
	g := r.cfg.Geometry
	s := kvblock.Shape{Tokens: 128, Layers: 2, KVHeads: 2, HeadDim: g.HeadDim}
	starts := []uint32{0, 512} // from the first token (sinks) and past it
	refs := make([]*kvblock.KV, len(starts))
	for i, st := range starts {
		refs[i] = fidelity.SyntheticKV(s, st, 42)
	}
	r.p.begin("codec fidelity", int64(len(kvblock.Codecs())))
	defer r.p.end()
	for _, c := range kvblock.Codecs() {
		var sum float64
		for i, ref := range refs {
			blk, err := kvblock.Encode(nil, ref, kvblock.Meta{Codec: c, StartPos: starts[i], RoPE: true, Sinks: -1})
			if err != nil {
				return fmt.Errorf("fidelity %s: %w", c, err)
			}
			var out kvblock.KV
			if _, err := kvblock.Decode(blk, &out); err != nil {
				return fmt.Errorf("fidelity %s: %w", c, err)
			}
			sum += fidelity.AttentionCosine(ref, &out, 16, 7)
		}
		gc := g
		gc.Codec = c
		f := CodecFidelity{Codec: c.String(), BytesPerToken: gc.TokenBytes(), AttentionCosine: sum / float64(len(refs))}
		r.rep.Codecs = append(r.rep.Codecs, f)
		phase := fmt.Sprintf("codec %s (%d-token blocks)", c, g.BlockTokens)
		size, cos := newRow(phase, "KV bytes per token", "B"), newRow(phase, "attention output cosine", "cos")
		size.KVCache, cos.KVCache = f.BytesPerToken, f.AttentionCosine
		r.rep.Rows = append(r.rep.Rows, size, cos)
		r.p.add(1, 0)
	}
	return nil
}
