package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

// The fast path of roundHalf must agree bit for bit with converting through
// f16, or a cache hit would no longer reproduce the no-cache logits.
func TestRoundHalfMatchesConversion(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var vals []float32
	for range 1 << 20 {
		vals = append(vals, math.Float32frombits(r.Uint32()))
	}
	for _, b := range []uint32{minNormalF16Bits - 1, minNormalF16Bits, maxF16Bits - 1, maxF16Bits, 0x477fefff, 0x477ff000, 0x3f800fff, 0x3f801000, 0x3f803000, 0x7f800000, 0x7fc00000, 0} {
		vals = append(vals, math.Float32frombits(b), math.Float32frombits(b|0x80000000))
	}
	// Every f16 value and every midpoint between neighbours (the ties).
	for h := range uint32(1 << 16) {
		f := half.ToFloat32(uint16(h))
		vals = append(vals, f, math.Float32frombits(math.Float32bits(f)+0x1000))
	}
	got := append([]float32(nil), vals...)
	roundHalf(got)
	for i, v := range vals {
		want := half.Round(v)
		if math.Float32bits(got[i]) != math.Float32bits(want) && !(want != want && got[i] != got[i]) {
			t.Fatalf("roundHalf(%#08x) = %#08x, conversion gives %#08x", math.Float32bits(v), math.Float32bits(got[i]), math.Float32bits(want))
		}
	}
}

func BenchmarkRoundHalf(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(i%1000-500) / 37
	}
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		roundHalf(x)
	}
}

func BenchmarkRoundHalfConversion(b *testing.B) {
	x := make([]float32, 1<<16)
	for i := range x {
		x[i] = float32(i%1000-500) / 37
	}
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		for i, v := range x {
			x[i] = half.Round(v)
		}
	}
}
