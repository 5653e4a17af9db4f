// Package fidelity measures what a lossy KV codec does to attention: keys
// shaped like real post-RoPE keys (outlier channels, rotary embeddings)
// and the cosine between attention outputs computed from the original and
// from the decoded KV. pkg/kvblock's tests judge the codecs with it and
// kvbench reports it per codec beside bytes per token.
package fidelity

import (
	"math"
	"math/rand/v2"

	"github.com/kvcache/kvcache/pkg/kvblock"
)

// SyntheticKV builds keys the way they look after RoPE in real models: a
// few channels carry large, mostly constant-sign outliers (the reason KIVI
// quantizes keys per channel), then rotary embeddings rotate channel pairs
// (d, d+D/2) by position-dependent angles. Values are plain Gaussian.
func SyntheticKV(s kvblock.Shape, start uint32, seed uint64) *kvblock.KV {
	rng := rand.New(rand.NewPCG(seed, 3))
	D := s.HeadDim
	kv := &kvblock.KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
	for l := range s.Layers {
		for h := range s.KVHeads {
			// 4 outlier channels in the slow-rotating half, magnitude 10-20.
			outl := map[int]float64{}
			for len(outl) < 4 {
				outl[D/4+rng.IntN(D/4)] = (10 + 10*rng.Float64()) * float64(1-2*rng.IntN(2))
			}
			for t := range s.Tokens {
				pos := float64(start) + float64(t)
				raw := make([]float64, D)
				for d := range D {
					raw[d] = rng.NormFloat64()
					if m, ok := outl[d]; ok {
						raw[d] = m + rng.NormFloat64()
					}
				}
				o := ((l*s.Tokens+t)*s.KVHeads + h) * D
				for i := range D / 2 {
					theta := pos * math.Pow(10000, -2*float64(i)/float64(D))
					c, sn := math.Cos(theta), math.Sin(theta)
					a, b := raw[i], raw[i+D/2]
					kv.K[o+i] = kvblock.RoundF16(float32(a*c - b*sn))
					kv.K[o+i+D/2] = kvblock.RoundF16(float32(a*sn + b*c))
				}
				for d := range D {
					kv.V[o+d] = kvblock.RoundF16(float32(rng.NormFloat64()))
				}
			}
		}
	}
	return kv
}

// AttentionCosine returns the mean cosine similarity between
// softmax(qK^T/sqrt(d))V computed with ref and with got, over nq random
// queries per (layer, head).
func AttentionCosine(ref, got *kvblock.KV, nq int, seed uint64) float64 {
	s := ref.Shape
	D := s.HeadDim
	rng := rand.New(rand.NewPCG(seed, 9))
	q := make([]float64, D)
	sc := make([]float64, s.Tokens)
	attend := func(kv *kvblock.KV, l, h int) []float64 {
		mx := math.Inf(-1)
		for t := range s.Tokens {
			o := ((l*s.Tokens+t)*s.KVHeads + h) * D
			var dot float64
			for d := range D {
				dot += q[d] * float64(kv.K[o+d])
			}
			sc[t] = dot / math.Sqrt(float64(D))
			mx = max(mx, sc[t])
		}
		out := make([]float64, D)
		var z float64
		for t := range s.Tokens {
			p := math.Exp(sc[t] - mx)
			z += p
			o := ((l*s.Tokens+t)*s.KVHeads + h) * D
			for d := range D {
				out[d] += p * float64(kv.V[o+d])
			}
		}
		for d := range out {
			out[d] /= z
		}
		return out
	}
	var sum float64
	var n int
	for l := range s.Layers {
		for h := range s.KVHeads {
			for range nq {
				for d := range q {
					q[d] = rng.NormFloat64() * 0.5
				}
				a, b := attend(ref, l, h), attend(got, l, h)
				var ab, aa, bb float64
				for d := range a {
					ab += a[d] * b[d]
					aa += a[d] * a[d]
					bb += b[d] * b[d]
				}
				sum += ab / math.Sqrt(aa*bb)
				n++
			}
		}
	}
	return sum / float64(n)
}
