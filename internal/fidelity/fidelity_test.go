package fidelity

import (
	"slices"
	"testing"

	"github.com/kvcache/kvcache/pkg/kvblock"
)

func TestAttentionCosine(t *testing.T) {
	s := kvblock.Shape{Tokens: 32, Layers: 1, KVHeads: 2, HeadDim: 64}
	ref := SyntheticKV(s, 0, 1)
	if again := SyntheticKV(s, 0, 1); !slices.Equal(ref.K, again.K) || !slices.Equal(ref.V, again.V) {
		t.Fatal("same seed, different KV")
	}
	if c := AttentionCosine(ref, ref, 8, 2); c < 1-1e-12 {
		t.Errorf("identical KV: cosine %v, want 1", c)
	}
	// Negated values give the opposite attention output.
	neg := &kvblock.KV{Shape: s, K: ref.K, V: make([]float32, len(ref.V))}
	for i, v := range ref.V {
		neg.V[i] = -v
	}
	if c := AttentionCosine(ref, neg, 8, 2); c > -1+1e-9 {
		t.Errorf("negated V: cosine %v, want -1", c)
	}
	// Keys carry outlier channels: some channel's mean magnitude is far
	// above the typical one (the reason KIVI quantizes keys per channel).
	mean := make([]float64, s.HeadDim)
	for i, k := range ref.K {
		if k < 0 {
			k = -k
		}
		mean[i%s.HeadDim] += float64(k)
	}
	sorted := slices.Sorted(slices.Values(mean))
	if sorted[len(sorted)-1] < 4*sorted[len(sorted)/2] {
		t.Errorf("no outlier channel: max channel %v, median %v", sorted[len(sorted)-1], sorted[len(sorted)/2])
	}
}
