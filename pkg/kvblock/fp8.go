package kvblock

import "math"

// OCP FP8 E4M3 ("fn" variant): 1 sign, 4 exponent (bias 7), 3 mantissa bits,
// no infinities, 0x7f/0xff are NaN, largest finite magnitude 448.

// e4m3Table maps every code to its float32 value; decoding is one lookup.
var e4m3Table = func() (t [256]float32) {
	for c := range t {
		e := (c >> 3) & 15
		m := c & 7
		var v float32
		switch {
		case e == 15 && m == 7:
			v = float32(math.NaN())
		case e == 0:
			v = float32(m) / 512
		default:
			v = float32(8+m) / 8 * float32(math.Ldexp(1, e-7))
		}
		if c&0x80 != 0 {
			v = -v
		}
		t[c] = v
	}
	return t
}()

// e4m3 converts a finite x to E4M3 with round-to-nearest-even, saturating at
// ±448 (the encoder never emits the NaN codes).
func e4m3(x float32) uint8 {
	b := math.Float32bits(x)
	sign := uint8(b>>24) & 0x80
	a := b & 0x7fffffff
	switch {
	case a >= 0x43e00000: // >= 448
		return sign | 0x7e
	case a < 0x3c800000: // below 2^-6, the smallest normal: subnormal step 2^-9
		// x*512 is in [0,8); adding 2^23 makes the FPU round it to an
		// integer (RNE) in the low mantissa bits. 8 is the smallest normal.
		r := math.Float32frombits(a)*512 + (1 << 23)
		return sign | uint8(math.Float32bits(r))
	}
	a -= 120 << 23 // rebias 127 -> 7
	a += 0x7ffff + (a>>20)&1
	c := uint8(a >> 20)
	return sign | min(c, 0x7e)
}
