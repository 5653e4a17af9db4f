package kvblock_test

import (
	"testing"

	"github.com/kvcache/kvcache/internal/fidelity"
	"github.com/kvcache/kvcache/pkg/kvblock"
)

// TestAttentionFidelity judges every codec by the attention outputs its
// decoded KV gives (internal/fidelity); -v prints the figures that
// docs/kv-cache.md quotes.
func TestAttentionFidelity(t *testing.T) {
	s := kvblock.Shape{Tokens: 128, Layers: 2, KVHeads: 2, HeadDim: 128}
	floor := map[kvblock.Codec]float64{kvblock.F16: 0.999999, kvblock.BF16: 0.9999, kvblock.FP8E4M3: 0.997, kvblock.Int8: 0.9995, kvblock.Int4: 0.985, kvblock.Int2: 0.85}
	for _, start := range []uint32{0, 512} {
		ref := fidelity.SyntheticKV(s, start, 42)
		for _, c := range kvblock.Codecs() {
			blk, err := kvblock.Encode(nil, ref, kvblock.Meta{Codec: c, StartPos: start, RoPE: true, Sinks: -1})
			if err != nil {
				t.Fatal(err)
			}
			var out kvblock.KV
			if _, err := kvblock.Decode(blk, &out); err != nil {
				t.Fatal(err)
			}
			cos := fidelity.AttentionCosine(ref, &out, 16, 7)
			t.Logf("start=%-4d %-8v mean cosine %.6f (floor %v)", start, c, cos, floor[c])
			if cos < floor[c] {
				t.Errorf("%v: cosine %.6f < %v", c, cos, floor[c])
			}
		}
	}
}
