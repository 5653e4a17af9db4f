package kvblock

import (
	"math/rand/v2"
	"testing"
)

// llama3Shape is one 64-token block of Llama-3-8B: 8 MiB of f16 K+V.
var llama3Shape = Shape{Tokens: 64, Layers: 32, KVHeads: 8, HeadDim: 128}

// randomKV returns normally distributed K and V rounded to f16, as the
// worker hands them over.
func randomKV(s Shape, seed uint64) *KV {
	rng := rand.New(rand.NewPCG(seed, 1))
	n := s.Elements()
	kv := &KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
	for i := range n {
		kv.K[i] = RoundF16(float32(rng.NormFloat64()))
		kv.V[i] = RoundF16(float32(rng.NormFloat64()))
	}
	return kv
}

func BenchmarkEncode(b *testing.B) {
	kv := randomKV(llama3Shape, 1)
	for _, c := range Codecs() {
		b.Run(c.String(), func(b *testing.B) {
			m := Meta{Codec: c, Sinks: -1}
			dst, err := Encode(nil, kv, m)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(4 * llama3Shape.Elements()))
			b.ResetTimer()
			for b.Loop() {
				dst, _ = Encode(dst, kv, m)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	kv := randomKV(llama3Shape, 1)
	for _, c := range Codecs() {
		b.Run(c.String(), func(b *testing.B) {
			blk, err := Encode(nil, kv, Meta{Codec: c, Sinks: -1})
			if err != nil {
				b.Fatal(err)
			}
			var out KV
			if _, err := Decode(blk, &out); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(4 * llama3Shape.Elements()))
			b.ResetTimer()
			for b.Loop() {
				if _, err := Decode(blk, &out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkInspect(b *testing.B) {
	kv := randomKV(llama3Shape, 1)
	blk, _ := Encode(nil, kv, Meta{Codec: Int8, Sinks: -1})
	b.SetBytes(int64(len(blk)))
	for b.Loop() {
		if _, err := Inspect(blk); err != nil {
			b.Fatal(err)
		}
	}
}
