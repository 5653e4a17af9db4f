package half

import (
	"encoding/binary"
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
)

// Every non-NaN f16 survives the round trip (moved from pkg/gguf).
func TestExhaustiveRoundTrip(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := ToFloat32(uint16(h))
		if f != f {
			if got := FromFloat32(f); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#04x -> %#04x, not a NaN", h, got)
			}
			continue
		}
		if got := FromFloat32(f); got != uint16(h) {
			t.Fatalf("half %#04x -> %v -> %#04x", h, f, got)
		}
		if got := FromFloat32Sat(f); !math.IsInf(float64(f), 0) && got != uint16(h) {
			t.Fatalf("saturating: half %#04x -> %v -> %#04x", h, f, got)
		}
	}
}

func TestRounding(t *testing.T) {
	tests := []struct {
		in   float32
		want float32
	}{
		{1, 1},
		{1 + 1.0/2048, 1},            // tie, rounds to even
		{1 + 3.0/2048, 1 + 2.0/1024}, // tie, rounds to even (up)
		{1 + 1.0/2048 + 1.0/65536, 1 + 1.0/1024},
		{65504, 65504},
		{65520, float32(math.Inf(1))},
		{1e-8, 0},
		{5.960464477539063e-08, 5.960464477539063e-08}, // smallest subnormal
		{-2.5, -2.5},
	}
	for _, tc := range tests {
		if got := Round(tc.in); got != tc.want {
			t.Errorf("Round(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if got := RoundBF16(1 + 1.0/256); got != 1 {
		t.Errorf("bf16 tie = %v", got)
	}
	nan := float32(math.NaN())
	if FromFloat32(70000) != 0x7c00 || FromFloat32Sat(70000) != 0x7bff || FromFloat32Sat(-70000) != 0xfbff || FromFloat32Sat(nan) != 0 {
		t.Error("f16 overflow or NaN handling")
	}
	if BF16FromFloat32Sat(float32(math.Inf(-1))) != 0xff7f || BF16FromFloat32Sat(nan) != 0 || BF16FromFloat32(nan)&0x7fff <= 0x7f80 {
		t.Error("bf16 overflow or NaN handling")
	}
}

// reference is the branchy conversion pkg/gguf had before this package; the
// bit-arithmetic one must agree with it everywhere (checked exhaustively
// over all 2^32 inputs once; sampled here).
func reference(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		shift := uint32(14 - e)
		if shift > 24 {
			return sign
		}
		full := mant | 0x800000
		m := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && m&1 == 1) {
			m++
		}
		return sign | uint16(m)
	}
	m := mant >> 13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && m&1 == 1) {
		m++
	}
	return sign | (uint16(e)<<10 + uint16(m))
}

func TestFromFloat32MatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	check := func(b uint32) {
		f := math.Float32frombits(b)
		if got, want := FromFloat32(f), reference(f); got != want {
			t.Fatalf("FromFloat32(%#08x) = %#04x, reference %#04x", b, got, want)
		}
	}
	for range 1 << 20 {
		check(r.Uint32())
	}
	// Every f16 value and every midpoint and neighbour of one (the ties).
	for h := range uint32(1 << 16) {
		b := math.Float32bits(ToFloat32(uint16(h)))
		for _, d := range []uint32{0, 1, 0xfff, 0x1000, 0x1001} {
			check(b + d)
			check(b - d)
		}
	}
}

func TestDecodeLE(t *testing.T) {
	for _, n := range []int{0, 1, 3, 4, 5, 17} {
		src := make([]byte, 2*n)
		for i := range n {
			binary.LittleEndian.PutUint16(src[2*i:], uint16(i*4099+7))
		}
		dst := make([]float32, n)
		DecodeLE(dst, src)
		for i := range n {
			if want := ToFloat32(uint16(i*4099 + 7)); math.Float32bits(dst[i]) != math.Float32bits(want) {
				t.Fatalf("n=%d: dst[%d] = %v, want %v", n, i, dst[i], want)
			}
		}
	}
}

// refToFloat32 is an independent decoder (normalising subnormals with a
// leading-zero count, as pkg/model's matmul had its own): the table must
// agree with it on every pattern (moved from pkg/model TestHalfToFloat32).
func refToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	shift := uint32(bits.LeadingZeros32(man)) - 21
	man = (man << shift) & 0x3ff
	return math.Float32frombits(sign | (113-shift)<<23 | man<<13)
}

func TestToFloat32MatchesReference(t *testing.T) {
	for h := range 1 << 16 {
		got, want := ToFloat32(uint16(h)), refToFloat32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("half %#04x: %g, want %g", h, got, want)
		}
	}
}
