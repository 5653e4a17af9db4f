package model

import (
	"math"

	"github.com/kvcache/kvcache/internal/half"
)

// The canonical reduction order of every matmul (all weight types, all
// kernels). For one output, lanes l = 0..15 each accumulate the elements
// i ≡ l (mod 16) of the first k&^15, in increasing i, with one fused
// multiply-add per element (a*b+c rounded once to float32). The lanes are
// then summed by a fixed tree (lane l + lane l+8, then +4, +2, +1) and the
// k%16 tail elements are added with fused multiply-adds in increasing i.
//
// Q8_0 weights use the same 16 lanes and tree: block b (32 elements) feeds
// lanes 8*(b%2)..8*(b%2)+7; lane j of a block gets the exact int32 sum of
// its products 4j..4j+3, scaled once: acc = fma(dx*dw, float32(sum), acc).
//
// The order depends only on k, never on the batch size, the tiling, the
// goroutine split or the instruction set, so prompt splits give the same
// bits (f16 cache hits stay bit-identical) and the AVX-512, AVX2 and
// portable paths agree bit for bit. FMA is used because it halves the
// instruction count of the inner loop; the portable code emulates the single
// rounding exactly (fma32), so machines without FMA get the same bits,
// only slower.

// fma32 returns a*b+c rounded once to float32 (round to nearest even), as
// VFMADD231PS computes it.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact: 24+24 significant bits fit in 53
	s := p + float64(c)          // nearest float64 to the exact sum
	r := float32(s)
	if float64(r) == s || s != s || math.IsInf(float64(r), 0) {
		return r
	}
	// Rounding s again to float32 matches rounding the exact sum unless s
	// sits exactly halfway between two float32s; then the rounding error
	// of s (TwoSum) says on which side the exact sum lies.
	lo, hi := r, r
	if float64(r) < s {
		hi = math.Nextafter32(r, float32(math.Inf(1)))
	} else {
		lo = math.Nextafter32(r, float32(math.Inf(-1)))
	}
	if float64(lo)+float64(hi) != 2*s {
		return r
	}
	bb := s - p
	e := (p - (s - bb)) + (float64(c) - bb)
	switch {
	case e > 0:
		return hi
	case e < 0:
		return lo
	}
	return r
}

// reduce16 sums the lanes in the canonical tree order.
func reduce16(a *[16]float32) float32 {
	var s8 [8]float32
	for i := range s8 {
		s8[i] = a[i] + a[i+8]
	}
	s4 := [4]float32{s8[0] + s8[4], s8[1] + s8[5], s8[2] + s8[6], s8[3] + s8[7]}
	s2 := [2]float32{s4[0] + s4[2], s4[1] + s4[3]}
	return s2[0] + s2[1]
}

// dotF32 is the canonical dot product of x and w (len(w) >= len(x)).
func dotF32(x, w []float32) float32 {
	k := len(x)
	w = w[:k]
	k16 := k &^ 15
	var acc [16]float32
	for i := 0; i < k16; i += 16 {
		xs, ws := x[i:i+16], w[i:i+16]
		for l := range acc {
			acc[l] = fma32(xs[l], ws[l], acc[l])
		}
	}
	return tailF32(reduce16(&acc), x[k16:], w[k16:])
}

// tailF32 adds the k%16 tail to a reduced sum s.
func tailF32(s float32, x, w []float32) float32 {
	for i, v := range x {
		s = fma32(v, w[i], s)
	}
	return s
}

// q8Block is the size of a Q8_0 block in elements and in bytes.
const (
	q8Elems = 32
	q8Bytes = 34
)

// quantizeQ8 quantizes a row x (len a multiple of 32) to Q8_0 as llama.cpp
// does for activations: per block d = max|x|/127, q = round(x/d) (half away
// from zero). The scale is kept in float32.
func quantizeQ8(q []int8, d []float32, x []float32) {
	for b := range len(x) / q8Elems {
		xs := x[b*q8Elems : (b+1)*q8Elems]
		var amax float32
		for _, v := range xs {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		s := amax / 127
		var id float32
		if s != 0 {
			id = 1 / s
		}
		d[b] = s
		qs := q[b*q8Elems : (b+1)*q8Elems]
		for j, v := range xs {
			qs[j] = int8(math.Round(float64(v * id)))
		}
	}
}

// dotQ8 is the canonical dot product of a quantized activation row (q, d)
// with a Q8_0 weight row w of len(d) blocks.
func dotQ8(q []int8, d []float32, w []byte) float32 {
	var acc [16]float32
	for b := range d {
		blk := w[b*q8Bytes : (b+1)*q8Bytes]
		ds := d[b] * half.ToFloat32(uint16(blk[0])|uint16(blk[1])<<8)
		qs := q[b*q8Elems : (b+1)*q8Elems]
		h := 8 * (b & 1)
		for j := range 8 {
			var s int32
			for t := 4 * j; t < 4*j+4; t++ {
				s += int32(qs[t]) * int32(int8(blk[2+t]))
			}
			acc[h+j] = fma32(ds, float32(s), acc[h+j])
		}
	}
	return reduce16(&acc)
}
