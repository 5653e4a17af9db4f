package kvbench

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Zipf samples ranks 0..n-1 with P(k) proportional to 1/(k+1)^s. Unlike
// math/rand's, any s >= 0 works (s = 0 is uniform, s ~ 1 is typical of
// content popularity), and it is deterministic given the caller's source.
type Zipf struct {
	cdf []float64
}

// NewZipf returns a sampler over n >= 1 ranks.
func NewZipf(n int, s float64) *Zipf {
	if n < 1 {
		n = 1
	}
	cdf := make([]float64, n)
	sum := 0.0
	for k := range n {
		sum += 1 / math.Pow(float64(k+1), s)
		cdf[k] = sum
	}
	for k := range cdf {
		cdf[k] /= sum
	}
	cdf[n-1] = 1
	return &Zipf{cdf: cdf}
}

// Prob returns the probability of rank k.
func (z *Zipf) Prob(k int) float64 {
	if k == 0 {
		return z.cdf[0]
	}
	return z.cdf[k] - z.cdf[k-1]
}

// Sample draws a rank.
func (z *Zipf) Sample(r *rand.Rand) int {
	u := r.Float64()
	return sort.Search(len(z.cdf)-1, func(i int) bool { return z.cdf[i] > u })
}
