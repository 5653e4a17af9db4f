package model

import (
	"math/rand/v2"
	"testing"
)

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func BenchmarkMatmul(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, sh := range []struct{ n, k, m int }{{256, 512, 512}, {256, 512, 1376}, {256, 1376, 512}, {1, 512, 1376}} {
		x := randSlice(r, sh.n*sh.k)
		w := f32Weight(sh.m, sh.k, randSlice(r, sh.m*sh.k))
		out := make([]float32, sh.n*sh.m)
		b.Run("", func(b *testing.B) {
			for b.Loop() {
				matmul(out, x, w, sh.n)
			}
			b.ReportMetric(2*float64(sh.n*sh.k*sh.m)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
