// Package half converts between float32 and the 16-bit floats that KV
// blocks and model weights are stored in: IEEE binary16 (f16) and
// bfloat16 (bf16). It is the one implementation used by pkg/kvblock (the
// block codecs), pkg/gguf (weights) and pkg/model (rounding KV to f16).
//
// Decoding f16 uses a 256 KiB table (one load per element; L2-resident,
// and the data-dependent hot lines stay in L1) because it beats the
// branchy bit-twiddling form; encoding uses branch-light bit arithmetic
// (F. Giesen's round-to-nearest-even conversion), since a table for
// float32 input would be far too large.
package half

import (
	"encoding/binary"
	"math"
)

// Max is the largest finite f16.
const Max = 65504

// table maps every f16 bit pattern to its float32 value.
var table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = toFloat32Slow(uint16(i))
	}
	return &t
}()

func toFloat32Slow(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN: keep the payload, force quiet.
		if man != 0 {
			return math.Float32frombits(sign | 0x7fc00000 | man<<13)
		}
		return math.Float32frombits(sign | 0x7f800000)
	case exp == 0: // zero or subnormal: exact in float32.
		v := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	default:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	}
}

// ToFloat32 returns the float32 value of the f16 bit pattern h. It is
// exact: every f16 value, including subnormals, infinities and NaNs (made
// quiet), is representable in float32.
func ToFloat32(h uint16) float32 { return table[h] }

// DecodeLE converts the little-endian f16 words of src to dst; src holds
// at least 2*len(dst) bytes.
func DecodeLE(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	t := table
	i := 0
	for ; i+4 <= len(dst); i += 4 {
		w := binary.LittleEndian.Uint64(src[2*i:])
		o := dst[i : i+4 : i+4]
		o[0] = t[uint16(w)]
		o[1] = t[uint16(w>>16)]
		o[2] = t[uint16(w>>32)]
		o[3] = t[uint16(w>>48)]
	}
	for ; i < len(dst); i++ {
		dst[i] = t[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

// FromFloat32 converts f to f16 with round-to-nearest-even, following IEEE
// semantics: values that round beyond 65504 become ±Inf, NaN stays a
// (quiet) NaN.
func FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return sign | 0x7e00
	case a >= 0x477ff000: // rounds to or beyond 65536: infinity
		return sign | 0x7c00
	}
	return sign | finite(a)
}

// FromFloat32Sat is FromFloat32 for storage that must stay finite: a NaN
// becomes +0 and anything that would round to ±Inf saturates to ±65504.
// The block codecs encode with it.
func FromFloat32Sat(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return 0
	case a >= 0x477ff000:
		return sign | 0x7bff
	}
	return sign | finite(a)
}

// finite converts the magnitude bits a (< 65520, so the result is finite)
// to f16 magnitude bits with RNE.
func finite(a uint32) uint16 {
	if a < 0x38800000 { // below the smallest normal f16 (2^-14)
		// Adding 0.5 puts the value in [0.5,1), whose float32 ulp is 2^-24,
		// the f16 subnormal step; the FPU does the RNE for us.
		r := math.Float32frombits(a) + 0.5
		return uint16(math.Float32bits(r) - 0x3f000000)
	}
	odd := (a >> 13) & 1
	a += 0xc8000fff // rebias exponent 127->15, add rounding bias 0xfff
	a += odd        // ties to even
	return uint16(a >> 13)
}

// Round rounds f to the nearest f16 value (RNE, IEEE overflow to ±Inf).
func Round(f float32) float32 { return table[FromFloat32(f)] }

// BF16ToFloat32 returns the float32 value of the bfloat16 bit pattern h
// (exact).
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// BF16FromFloat32 converts f to bfloat16 with round-to-nearest-even and
// IEEE semantics (overflow to ±Inf, NaN stays a quiet NaN).
func BF16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// BF16FromFloat32Sat is the saturating variant: NaN -> +0, values that
// would round to ±Inf -> ±max finite bfloat16.
func BF16FromFloat32Sat(f float32) uint16 {
	b := math.Float32bits(f)
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return 0
	case a >= 0x7f7f8000:
		return uint16(b>>16)&0x8000 | 0x7f7f
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// RoundBF16 rounds f to the nearest bfloat16 value (RNE).
func RoundBF16(f float32) float32 { return BF16ToFloat32(BF16FromFloat32(f)) }
