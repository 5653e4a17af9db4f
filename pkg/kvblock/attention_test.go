package kvblock

import (
	"math"
	"math/rand/v2"
	"testing"
)

// syntheticKeys builds keys the way they look after RoPE in real models: a
// few channels carry large, mostly constant-sign outliers (the reason KIVI
// quantizes keys per channel), then rotary embeddings rotate channel pairs
// (d, d+D/2) by position-dependent angles. Values are plain Gaussian.
func syntheticKV(s Shape, start uint32, seed uint64) *KV {
	rng := rand.New(rand.NewPCG(seed, 3))
	D := s.HeadDim
	kv := &KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
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
					kv.K[o+i] = RoundF16(float32(a*c - b*sn))
					kv.K[o+i+D/2] = RoundF16(float32(a*sn + b*c))
				}
				for d := range D {
					kv.V[o+d] = RoundF16(float32(rng.NormFloat64()))
				}
			}
		}
	}
	return kv
}

// attentionCosine returns the mean cosine similarity between
// softmax(qK^T/sqrt(d))V computed with ref and with got, over nq random
// queries per (layer, head).
func attentionCosine(ref, got *KV, nq int, seed uint64) float64 {
	s := ref.Shape
	D := s.HeadDim
	rng := rand.New(rand.NewPCG(seed, 9))
	q := make([]float64, D)
	sc := make([]float64, s.Tokens)
	attend := func(kv *KV, l, h int) []float64 {
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

func TestAttentionFidelity(t *testing.T) {
	s := Shape{Tokens: 128, Layers: 2, KVHeads: 2, HeadDim: 128}
	floor := map[Codec]float64{F16: 0.999999, BF16: 0.9999, FP8E4M3: 0.997, Int8: 0.9995, Int4: 0.985, Int2: 0.85}
	for _, start := range []uint32{0, 512} {
		ref := syntheticKV(s, start, 42)
		for _, c := range Codecs() {
			blk, err := Encode(nil, ref, Meta{Codec: c, StartPos: start, RoPE: true, Sinks: -1})
			if err != nil {
				t.Fatal(err)
			}
			var out KV
			if _, err := Decode(blk, &out); err != nil {
				t.Fatal(err)
			}
			cos := attentionCosine(ref, &out, 16, 7)
			t.Logf("start=%-4d %-8v mean cosine %.6f (floor %v)", start, c, cos, floor[c])
			if cos < floor[c] {
				t.Errorf("%v: cosine %.6f < %v", c, cos, floor[c])
			}
		}
	}
}
