package kvblock

import (
	"math"
	"unsafe"
)

// The model engine keeps KV in 16-bit floats, so every codec ends up
// converting to or from f16. Decoding uses a 256 KiB table (one load per
// element, L2-resident and data-dependent hot lines stay in L1) because it
// beats the branchy bit-twiddling form; encoding uses branch-light bit
// arithmetic (F. Giesen's RNE conversion) since a table for float32 input
// would be far too large.

// f16Table maps every f16 bit pattern to its float32 value.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for i := range t {
		t[i] = f16ToF32Slow(uint16(i))
	}
	return &t
}()

func f16ToF32Slow(h uint16) float32 {
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

// F16ToFloat32 returns the float32 value of the IEEE binary16 bit pattern h.
// It is exact: every f16 value, including subnormals, infinities and NaNs
// (made quiet), is representable in float32.
func F16ToFloat32(h uint16) float32 { return f16Table[h] }

// F16Bits converts f to IEEE binary16 with round-to-nearest-even, following
// IEEE semantics: values that round beyond 65504 become ±Inf, NaN stays a
// (quiet) NaN. Encode does not use it as is: see the package documentation
// for how the codecs saturate instead.
func F16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return sign | 0x7e00
	case a >= 0x477ff000: // rounds to or beyond 65536: infinity
		return sign | 0x7c00
	}
	return sign | f16Finite(a)
}

// f16Sat is the conversion Encode uses: like F16Bits, but a NaN becomes +0
// and anything that would round to ±Inf saturates to ±65504, so a block never
// carries a non-finite value produced by this encoder.
func f16Sat(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	a := b & 0x7fffffff
	switch {
	case a > 0x7f800000:
		return 0
	case a >= 0x477ff000:
		return sign | 0x7bff
	}
	return sign | f16Finite(a)
}

// f16Finite converts the magnitude bits a (< 65520, so the result is finite)
// to f16 magnitude bits with RNE.
func f16Finite(a uint32) uint16 {
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

// RoundF16 rounds f to the nearest f16 value (RNE, IEEE overflow to ±Inf).
// The worker applies it to KV so that the f16 codec is lossless.
func RoundF16(f float32) float32 { return f16Table[F16Bits(f)] }

// BF16Bits converts f to bfloat16 with round-to-nearest-even and IEEE
// semantics (overflow to ±Inf, NaN stays NaN).
func BF16Bits(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// bf16Sat is the saturating variant used by Encode: NaN -> +0, values that
// would round to ±Inf -> ±max finite bfloat16.
func bf16Sat(f float32) uint16 {
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

// BF16ToFloat32 returns the float32 value of the bfloat16 bit pattern h.
func BF16ToFloat32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// RoundBF16 rounds f to the nearest bfloat16 value (RNE).
func RoundBF16(f float32) float32 { return BF16ToFloat32(BF16Bits(f)) }

const (
	f16Max     = 65504
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

// ceilF16 returns the smallest f16 >= x for finite x in [0, 65504]; it is
// used for scales so the quantization range always covers the data.
func ceilF16(x float32) uint16 {
	h := f16Sat(x)
	if f16Table[h] < x && h < 0x7bff {
		h++
	}
	return h
}

// floorF16 returns the largest f16 <= x for finite x in [-65504, 65504]; it
// is used for zero points (the group minimum) for the same reason.
func floorF16(x float32) uint16 {
	h := f16Sat(x)
	if f16Table[h] > x {
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
// time and fall back to f16Sat/bf16Sat/f16Table when a value is outside the
// common range.

const f16MinNormBits = 0x38800000 // float32 bits of 2^-14, the smallest normal f16

// f16Normal4 reports whether all four float32 bit patterns have a magnitude
// in [2^-14, 65504], where f16Norm is exact.
func f16Normal4(b0, b1, b2, b3 uint32) bool {
	const lo, span = f16MinNormBits, f16MaxBits - f16MinNormBits
	return max(b0&0x7fffffff-lo, b1&0x7fffffff-lo, b2&0x7fffffff-lo, b3&0x7fffffff-lo) <= span
}

// f16Norm is f16Sat (= F16Bits) for float32 bits b whose magnitude is in
// [2^-14, 65504]: rebias the exponent and round to nearest even in one add.
func f16Norm(b uint32) uint64 {
	a := b & 0x7fffffff
	return uint64((a+0xc8000fff+(a>>13)&1)>>13 | (b>>16)&0x8000)
}

// bf16Round is bf16Sat for float32 bits whose magnitude is below 0x7f7f8000
// (finite, not rounding to infinity).
func bf16Round(b uint32) uint64 {
	return uint64((b + 0x7fff + (b>>16)&1) >> 16)
}

// f16SatFast is f16Sat with the common normal case inlined.
func f16SatFast(x float32) uint16 {
	b := math.Float32bits(x)
	if b&0x7fffffff-f16MinNormBits > f16MaxBits-f16MinNormBits {
		return f16Sat(x)
	}
	return uint16(f16Norm(b))
}

// ceilF16Fast is ceilF16 with the f16 rounding inlined.
func ceilF16Fast(x float32) uint16 {
	h := f16SatFast(x)
	if f16Table[h] < x && h < 0x7bff {
		h++
	}
	return h
}

// floorF16Fast is floorF16 with the f16 rounding inlined.
func floorF16Fast(x float32) uint16 {
	h := f16SatFast(x)
	if f16Table[h] > x {
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
