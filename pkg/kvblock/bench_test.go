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

func BenchmarkDecode(b *testing.B) { benchDecode(b) }

// BenchmarkDecodePortable is BenchmarkDecode with the vector decoders off,
// the baseline they are measured against (run both in one go test).
func BenchmarkDecodePortable(b *testing.B) {
	defer func(v *decoder) { vdec = v }(vdec)
	vdec = nil
	benchDecode(b)
}

func benchDecode(b *testing.B) {
	b.Logf("decoder %s", DecoderName())
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
			c0 := processCPU()
			for b.Loop() {
				if _, err := Decode(blk, &out); err != nil {
					b.Fatal(err)
				}
			}
			cpu := processCPU() - c0
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
			// The encoded block's bytes per CPU second: what kvbench's
			// decode rows compare with the fetch rate.
			b.ReportMetric(float64(len(blk))*float64(b.N)/cpu.Seconds()/1e9, "blockGB/cpu-s")
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
