package model

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

// roundTo's finite result is false exactly when some value does not
// round to a finite f16, wherever it sits (vector body or tail).
func TestRoundToReportsNonFinite(t *testing.T) {
	for _, ks := range kernelSets() {
		for _, n := range []int{1, 7, 8, 9, 33} {
			for pos := range n {
				for _, bad := range []float32{65520, -1e6, float32(math.Inf(1)), float32(math.NaN())} {
					x := make([]float32, n)
					for i := range x {
						x[i] = 65519 // rounds to 65504: finite
					}
					if !ks.roundTo(make([]float32, n), x) {
						t.Fatalf("%s: n=%d all finite, reported not", ks.name, n)
					}
					x[pos] = bad
					if ks.roundTo(make([]float32, n), x) {
						t.Fatalf("%s: n=%d, %v at %d reported finite", ks.name, n, bad, pos)
					}
				}
			}
		}
	}
}

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
	for _, ks := range kernelSets() {
		// In place, as roundHalf, and into another slice, as appendRounded;
		// odd offsets and lengths exercise the vector loops' tails.
		for _, off := range []int{0, 3} {
			src := vals[off:]
			inPlace := append([]float32(nil), src...)
			fin1 := ks.roundTo(inPlace, inPlace)
			copied := make([]float32, len(src))
			fin2 := ks.roundTo(copied, src)
			if fin1 || fin2 {
				t.Fatalf("%s: roundTo calls values with infinities and NaNs finite", ks.name)
			}
			for i, v := range src {
				want := half.Round(v)
				for _, got := range []float32{inPlace[i], copied[i]} {
					if math.Float32bits(got) != math.Float32bits(want) && !(want != want && got != got) {
						t.Fatalf("%s: roundTo(%#08x) = %#08x, conversion gives %#08x", ks.name, math.Float32bits(v), math.Float32bits(got), math.Float32bits(want))
					}
				}
			}
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
