package model

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
)

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// BenchmarkMatmul runs the bench model's (issue 13) matmul shapes for each
// in-place weight type: prefill chunks (n=256) and decode (n=1), the
// last decode shape being the output head, which does not fit in cache.
func BenchmarkMatmul(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.Q8_0} {
		for _, sh := range []struct{ n, k, m int }{{256, 768, 2048}, {256, 2048, 768}, {1, 768, 2048}, {1, 2048, 768}, {1, 768, 32000}} {
			x := randSlice(r, sh.n*sh.k)
			w := encodeWeight(b, typ, sh.m, sh.k, randSlice(r, sh.m*sh.k))
			out := make([]float32, sh.n*sh.m)
			b.Run(fmt.Sprintf("%v/%dx%dx%d", typ, sh.n, sh.k, sh.m), func(b *testing.B) {
				for b.Loop() {
					matmul(out, x, w, sh.n)
				}
				b.ReportMetric(2*float64(sh.n*sh.k*sh.m)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
