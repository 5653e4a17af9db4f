package kvblock

import (
	"math"
	"unsafe"

	"github.com/kvcache/kvcache/internal/half"
)

// The model engine keeps KV in 16-bit floats, so every codec ends up
// converting to or from f16; the conversions live in internal/half. This
// file keeps the public names and the inlined fast paths of the codecs'
// four-at-a-time loops.

// F16ToFloat32 returns the float32 value of the IEEE binary16 bit pattern h.
// It is exact: every f16 value, including subnormals, infinities and NaNs
// (made quiet), is representable in float32.
func F16ToFloat32(h uint16) float32 { return half.ToFloat32(h) }

// F16Bits converts f to IEEE binary16 with round-to-nearest-even, following
// IEEE semantics: values that round beyond 65504 become ±Inf, NaN stays a
// (quiet) NaN. Encode does not use it as is: see the package documentation
// for how the codecs saturate instead.
func F16Bits(f float32) uint16 { return half.FromFloat32(f) }

// RoundF16 rounds f to the nearest f16 value (RNE, IEEE overflow to ±Inf).
// The worker applies it to KV so that the f16 codec is lossless.
func RoundF16(f float32) float32 { return half.Round(f) }

// BF16Bits converts f to bfloat16 with round-to-nearest-even and IEEE
// semantics (overflow to ±Inf, NaN stays NaN).
func BF16Bits(f float32) uint16 { return half.BF16FromFloat32(f) }

// BF16ToFloat32 returns the float32 value of the bfloat16 bit pattern h.
func BF16ToFloat32(h uint16) float32 { return half.BF16ToFloat32(h) }

// RoundBF16 rounds f to the nearest bfloat16 value (RNE).
func RoundBF16(f float32) float32 { return half.RoundBF16(f) }

const (
	f16Max     = half.Max
	f16MaxBits = 0x477fe000 // float32 bits of 65504
)

// sanitize is the clamp every lossy codec applies to its input: NaN -> 0,
// anything beyond the f16 range (including ±Inf) -> ±65504. The engine
// cannot produce larger finite KV in f16 anyway; this keeps every scale and
// zero point finite. It is only called on rows that failed a fast check.
func sanitize(x float32) float32 {
	switch {
	case x != x:
		return 0
	case x > f16Max:
		return f16Max
	case x < -f16Max:
		return -f16Max
	}
	return x
}

func sanitizeRow(dst, src []float32) []float32 {
	dst = dst[:len(src)]
	for i, x := range src {
		dst[i] = sanitize(x)
	}
	return dst
}

// absmaxBits returns the largest |x| of s as float32 bits. Comparing the
// magnitude bits as integers orders finite values correctly and puts Inf and
// NaN above every finite value, so one compare against f16MaxBits detects
// rows that need sanitize. Integer CMOVs on the raw bits run about 3x faster
// than the builtin float max, which must honour NaN and -0.
func absmaxBits(s []float32) uint32 {
	if useSIMD && len(s) > 0 && len(s)%16 == 0 {
		return simdAbsmaxBits(s)
	}
	u := float32Bits(s)
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+4 <= len(u); i += 4 {
		v := u[i : i+4 : i+4]
		m0 = max(m0, v[0]&0x7fffffff)
		m1 = max(m1, v[1]&0x7fffffff)
		m2 = max(m2, v[2]&0x7fffffff)
		m3 = max(m3, v[3]&0x7fffffff)
	}
	for ; i < len(u); i++ {
		m0 = max(m0, u[i]&0x7fffffff)
	}
	return max(m0, m1, m2, m3)
}

// float32Bits views s as its IEEE bit patterns without copying, so the hot
// loops can load straight into integer registers.
func float32Bits(s []float32) []uint32 {
	return unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(s))), len(s))
}

// orderKey maps float32 bits to an int32 whose signed order is the float
// order (for non-NaN; +NaN sorts above +Inf and -NaN below -Inf), letting
// min/max run as integer CMOVs.
func orderKey(b uint32) int32 {
	i := int32(b)
	return i ^ (i >> 31 & 0x7fffffff)
}

// keyFloat inverts orderKey.
func keyFloat(k int32) float32 {
	return math.Float32frombits(uint32(k ^ (k >> 31 & 0x7fffffff)))
}

// Order keys of ±65504: a group whose min/max keys fall outside holds
// NaN, Inf or out-of-range values and takes the sanitize path.
var (
	keyMax = orderKey(f16MaxBits)
	keyMin = orderKey(f16MaxBits | 0x80000000)
)

// Fast paths of the conversions, for the loops that take four values at a
// time and fall back to the general conversions of internal/half when a
// value is outside the common range.

const f16MinNormBits = 0x38800000 // float32 bits of 2^-14, the smallest normal f16

// f16Normal4 reports whether all four float32 bit patterns have a magnitude
// in [2^-14, 65504], where f16Norm is exact.
func f16Normal4(b0, b1, b2, b3 uint32) bool {
	const lo, span = f16MinNormBits, f16MaxBits - f16MinNormBits
	return max(b0&0x7fffffff-lo, b1&0x7fffffff-lo, b2&0x7fffffff-lo, b3&0x7fffffff-lo) <= span
}

// f16Norm is half.FromFloat32Sat (= F16Bits) for float32 bits b whose magnitude is in
// [2^-14, 65504]: rebias the exponent and round to nearest even in one add.
func f16Norm(b uint32) uint64 {
	a := b & 0x7fffffff
	return uint64((a+0xc8000fff+(a>>13)&1)>>13 | (b>>16)&0x8000)
}

// bf16Round is half.BF16FromFloat32Sat for float32 bits whose magnitude is below 0x7f7f8000
// (finite, not rounding to infinity).
func bf16Round(b uint32) uint64 {
	return uint64((b + 0x7fff + (b>>16)&1) >> 16)
}

// f16SatFast is half.FromFloat32Sat with the common normal case inlined.
func f16SatFast(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff-f16MinNormBits > f16MaxBits-f16MinNormBits {
		return half.FromFloat32Sat(x)
	}
	return uint16(f16Norm(b))
}

// ceilF16Fast returns the smallest f16 >= x for finite x in [0, 65504];
// it is used for scales so the quantization range always covers the data.
func ceilF16Fast(x float32) uint16 {
	h := f16SatFast(x)
	if half.ToFloat32(h) < x && h < 0x7bff {
		h++
	}
	return h
}

// floorF16Fast returns the largest f16 <= x for finite x in [-65504,
// 65504]; it is used for zero points (the group minimum) for the same
// reason.
func floorF16Fast(x float32) uint16 {
	h := f16SatFast(x)
	if half.ToFloat32(h) > x {
		switch {
		case h == 0: // +0 -> smallest negative subnormal
			h = 0x8001
		case h&0x8000 == 0:
			h--
		case h != 0xfbff:
			h++
		}
	}
	return h
}
