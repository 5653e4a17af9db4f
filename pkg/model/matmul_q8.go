package model

import "unsafe"

// q8Acts is a batch of activation rows quantized to Q8_0.
type q8Acts struct {
	nb  int       // blocks per row
	q   []int8    // [n][nb*32]
	d   []float32 // [n][nb] block scales
	d16 []float32 // [n][nb/2][16]: per block pair, 8 copies of each scale (SIMD kernels)
	// c is, in the layout of d16, -128 times the sum of each lane's four
	// activations: the start of the int32 accumulators of kernels that
	// take the weights as the unsigned operand (w+128).
	c []int32
}

func (ks *kernels) quantizeActs(x []float32, n, k int, wide bool) *q8Acts {
	nb := k / q8Elems
	a := &q8Acts{nb: nb, q: make([]int8, n*k), d: make([]float32, n*nb)}
	parallel(n, func(r int) {
		ks.quantizeQ8(a.q[r*k:(r+1)*k], a.d[r*nb:(r+1)*nb], x[r*k:(r+1)*k])
	})
	if wide {
		a.d16 = make([]float32, n*nb*8)
		a.c = make([]int32, n*nb*8)
		for r := range n {
			for b := range nb {
				o := r*nb*8 + (b/2)*16 + (b%2)*8
				p, c := a.d16[o:o+8], a.c[o:o+8]
				qs := a.q[r*k+b*q8Elems : r*k+(b+1)*q8Elems]
				for j := range 8 {
					p[j] = a.d[r*nb+b]
					c[j] = -128 * (int32(qs[4*j]) + int32(qs[4*j+1]) + int32(qs[4*j+2]) + int32(qs[4*j+3]))
				}
			}
		}
	}
	return a
}

// f16Rows views rows [o0,o1) of an F16 weight as f16 bits.
func f16Rows(w *weight, o0, o1 int) []uint16 {
	return unsafe.Slice((*uint16)(unsafe.Pointer(&w.raw[o0*w.rowBytes])), (o1-o0)*w.cols)
}

// matmulQ8 multiplies by a Q8_0 weight: activations quantized once, int8
// dot products per block.
func (ks *kernels) matmulQ8(out, x []float32, w *weight, n int) {
	k, m := w.cols, w.rows
	nb := k / q8Elems
	simd := ks.q8x4x2 != nil && nb%2 == 0
	a := ks.quantizeActs(x, n, k, simd)
	ob := min(m, max(8, (96<<10)/w.rowBytes)&^7)
	chunks := (m + ob - 1) / ob
	parallel(chunks, func(c int) {
		o0 := c * ob
		ks.q8Block(out, m, a, n, w, o0, min(m, o0+ob), simd)
	})
}

func (ks *kernels) q8Block(out []float32, ldo int, a *q8Acts, n int, w *weight, o0, o1 int, simd bool) {
	nb, k, rb := a.nb, a.nb*q8Elems, w.rowBytes
	ref := func(r, o int) float32 {
		return dotQ8(a.q[r*k:(r+1)*k], a.d[r*nb:(r+1)*nb], w.rowRaw(o))
	}
	var tile [16]float32
	r := 0
	if simd && nb > 0 {
		np := nb / 2
		for ; r+4 <= n; r += 4 {
			o := o0
			if ks.q8x4x4 != nil {
				for ; o+4 <= o1; o += 4 {
					ks.q8x4x4(&a.q[r*k], k, &a.d16[r*nb*8], &a.c[r*nb*8], nb*32, &w.raw[o*rb], rb, np, &tile[0])
					for i := range 4 {
						copy(out[(r+i)*ldo+o:(r+i)*ldo+o+4], tile[i*4:i*4+4])
					}
				}
			}
			for ; o+2 <= o1; o += 2 {
				ks.q8x4x2(&a.q[r*k], k, &a.d16[r*nb*8], nb*32, &w.raw[o*rb], rb, np, &tile[0])
				for i := range 4 {
					out[(r+i)*ldo+o] = tile[i*2]
					out[(r+i)*ldo+o+1] = tile[i*2+1]
				}
			}
			for ; o < o1; o++ {
				for i := range 4 {
					out[(r+i)*ldo+o] = ref(r+i, o)
				}
			}
		}
	}
	for ; r < n; r++ {
		o := o0
		if simd && nb > 0 {
			for ; o+4 <= o1; o += 4 {
				ks.q8x1x4(&a.q[r*k], &a.d16[r*nb*8], &w.raw[o*rb], rb, nb/2, &tile[0])
				copy(out[r*ldo+o:r*ldo+o+4], tile[:4])
			}
		}
		for ; o < o1; o++ {
			out[r*ldo+o] = ref(r, o)
		}
	}
}
