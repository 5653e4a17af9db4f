//go:build goexperiment.simd && amd64

package kvblock

import (
	"math/rand/v2"
	"simd/archsimd"
	"testing"
)

// TestSIMDMatchesScalar encodes the same inputs with the vector loops and
// with the scalar ones and requires identical blocks and decoded floats.
func TestSIMDMatchesScalar(t *testing.T) {
	if !archsimd.X86.AVX512() {
		t.Skip("no AVX-512: the scalar code runs anyway")
	}
	defer func(v bool) { useSIMD = v }(useSIMD)
	shapes := []Shape{
		{Tokens: 64, Layers: 2, KVHeads: 2, HeadDim: 128},
		{Tokens: 37, Layers: 1, KVHeads: 3, HeadDim: 96},
		{Tokens: 5, Layers: 2, KVHeads: 1, HeadDim: 16},
		{Tokens: 40, Layers: 1, KVHeads: 2, HeadDim: 48},
		{Tokens: 33, Layers: 1, KVHeads: 1, HeadDim: 80},
	}
	for si, s := range shapes {
		for gi, gen := range []func(*rand.Rand, int) float32{wildFloat, func(r *rand.Rand, _ int) float32 { return float32(r.NormFloat64()) }} {
			rng := rand.New(rand.NewPCG(uint64(si), uint64(gi)))
			n := s.Elements()
			kv := &KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
			for i := range n {
				kv.K[i], kv.V[i] = gen(rng, i), gen(rng, i)
			}
			for _, c := range Codecs() {
				for _, start := range []uint32{0, 2, 100} {
					m := Meta{Codec: c, StartPos: start, Sinks: -1}
					useSIMD = false
					want, err := Encode(nil, kv, m)
					if err != nil {
						t.Fatal(err)
					}
					useSIMD = true
					got, _ := Encode(nil, kv, m)
					if string(got) != string(want) {
						t.Fatalf("%v %+v start %d gen %d: SIMD encoding differs", c, s, start, gi)
					}
				}
			}
		}
	}
}
