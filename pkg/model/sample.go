package model

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Argmax returns the index of the largest logit (the first on ties), or -1
// for an empty slice.
func Argmax(logits []float32) int {
	best := -1
	for i, v := range logits {
		if best < 0 || v > logits[best] {
			best = i
		}
	}
	return best
}

// Sampler picks tokens from logits. A Sampler is not safe for concurrent
// use; make one per sequence.
type Sampler struct {
	temperature float64
	topP        float64
	rng         *rand.Rand
}

// NewSampler returns a sampler. temperature <= 0 means greedy (Argmax).
// topP in (0, 1) restricts sampling to the smallest set of most likely
// tokens whose probability reaches topP (nucleus sampling); other values
// disable it. The same seed gives the same choices for the same logits.
func NewSampler(temperature, topP float64, seed uint64) *Sampler {
	return &Sampler{
		temperature: temperature,
		topP:        topP,
		rng:         rand.New(rand.NewPCG(seed, seed^0xda3e39cb94b95bdb)),
	}
}

// Sample returns the chosen token id.
func (s *Sampler) Sample(logits []float32) int {
	if s.temperature <= 0 || len(logits) == 0 {
		return Argmax(logits)
	}
	m := logits[Argmax(logits)]
	p := make([]float64, len(logits))
	var sum float64
	for i, v := range logits {
		p[i] = math.Exp(float64(v-m) / s.temperature)
		sum += p[i]
	}
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	total := sum
	if s.topP > 0 && s.topP < 1 {
		sort.SliceStable(idx, func(a, b int) bool { return p[idx[a]] > p[idx[b]] })
		var cum float64
		for k, i := range idx {
			cum += p[i]
			if cum >= s.topP*sum {
				idx = idx[:k+1]
				break
			}
		}
		total = cum
	}
	r := s.rng.Float64() * total
	for _, i := range idx {
		r -= p[i]
		if r < 0 {
			return i
		}
	}
	return idx[len(idx)-1]
}
