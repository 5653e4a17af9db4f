package model

import (
	"runtime"
	"sync"
)

// Matrix multiplication with a fixed reduction order.
//
// Every output element out[r][o] = sum_k x[r][k]*w[o][k] is accumulated by a
// single float32 accumulator, starting at zero, in increasing k, with each
// product rounded to float32 before the add (the explicit float32 conversion
// forbids fused multiply-add, which the Go spec would otherwise allow). The
// tile kernels below differ only in how many independent accumulators they
// run at once, so an element's value does not depend on the batch size, the
// tiling, the goroutine split or the machine's core count. This is what makes
// prefill results independent of how a prompt is split between imported KV
// and computed tokens.

// matmul computes out[n][m] = x[n][k] · w[m][k]ᵀ using up to workers
// goroutines (including the caller).
func matmul(out, x, w []float32, n, k, m int) {
	if n == 0 || m == 0 {
		return
	}
	// Column blocks of W rows small enough to stay in L2 while every row
	// pair of x streams past them.
	ob := max(8, (96<<10)/(4*k)) &^ 7
	if ob > m {
		ob = m
	}
	chunks := (m + ob - 1) / ob
	parallel(chunks, func(c int) {
		o0 := c * ob
		o1 := min(m, o0+ob)
		matmulBlock(out, x, w, n, k, m, o0, o1)
	})
}

// matmulBlock computes columns [o0,o1) of every row.
func matmulBlock(out, x, w []float32, n, k, m, o0, o1 int) {
	r := 0
	for ; r+2 <= n; r += 2 {
		x0 := x[r*k : r*k+k]
		x1 := x[(r+1)*k : (r+1)*k+k]
		o := o0
		for ; o+4 <= o1; o += 4 {
			c := kern2x4(x0, x1, w[o*k:(o+4)*k], k)
			copy(out[r*m+o:r*m+o+4], c[0:4])
			copy(out[(r+1)*m+o:(r+1)*m+o+4], c[4:8])
		}
		for ; o < o1; o++ {
			wo := w[o*k : o*k+k]
			out[r*m+o] = dot(x0, wo)
			out[(r+1)*m+o] = dot(x1, wo)
		}
	}
	if r < n {
		matvecBlock(out[r*m:r*m+m], x[r*k:r*k+k], w, k, o0, o1)
	}
}

// matvecBlock computes out[o] = x·w[o] for o in [o0,o1).
func matvecBlock(out, x, w []float32, k, o0, o1 int) {
	o := o0
	for ; o+8 <= o1; o += 8 {
		c := kern1x8(x, w[o*k:(o+8)*k], k)
		copy(out[o:o+8], c[:])
	}
	for ; o < o1; o++ {
		out[o] = dot(x, w[o*k:o*k+k])
	}
}

// dot is the reference reduction: one accumulator, increasing index.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for i, v := range a {
		s += float32(v * b[i])
	}
	return s
}

// kern2x4 computes the dot products of two x rows with four consecutive
// w rows (w holds 4*k values).
func kern2x4(x0, x1, w []float32, k int) (c [8]float32) {
	x0 = x0[:k]
	x1 = x1[:k]
	w0 := w[0*k : 1*k]
	w1 := w[1*k : 2*k]
	w2 := w[2*k : 3*k]
	w3 := w[3*k : 4*k]
	var c00, c01, c02, c03, c10, c11, c12, c13 float32
	// Written so the compiler keeps all accumulators and both x values in
	// registers and folds the w loads into the multiplies (no spills).
	for i, a0 := range x0 {
		a1 := x1[i]
		c00 += float32(a0 * w0[i])
		c10 += float32(a1 * w0[i])
		c01 += float32(a0 * w1[i])
		c11 += float32(a1 * w1[i])
		c02 += float32(a0 * w2[i])
		c12 += float32(a1 * w2[i])
		c03 += float32(a0 * w3[i])
		c13 += float32(a1 * w3[i])
	}
	return [8]float32{c00, c01, c02, c03, c10, c11, c12, c13}
}

// kern1x8 computes the dot products of x with eight consecutive w rows.
func kern1x8(x, w []float32, k int) (c [8]float32) {
	x = x[:k]
	w0 := w[0*k : 1*k]
	w1 := w[1*k : 2*k]
	w2 := w[2*k : 3*k]
	w3 := w[3*k : 4*k]
	w4 := w[4*k : 5*k]
	w5 := w[5*k : 6*k]
	w6 := w[6*k : 7*k]
	w7 := w[7*k : 8*k]
	var c0, c1, c2, c3, c4, c5, c6, c7 float32
	for i, a := range x {
		c0 += float32(a * w0[i])
		c1 += float32(a * w1[i])
		c2 += float32(a * w2[i])
		c3 += float32(a * w3[i])
		c4 += float32(a * w4[i])
		c5 += float32(a * w5[i])
		c6 += float32(a * w6[i])
		c7 += float32(a * w7[i])
	}
	return [8]float32{c0, c1, c2, c3, c4, c5, c6, c7}
}

// parallel runs fn(i) for i in [0,n) on up to runtime.NumCPU goroutines
// (the caller included) and waits for all of them. Work is handed out by a
// shared counter, so uneven items balance.
func parallel(n int, fn func(i int)) {
	workers := min(n, runtime.NumCPU())
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	take := func() int {
		mu.Lock()
		defer mu.Unlock()
		i := next
		next++
		return i
	}
	run := func() {
		for i := take(); i < n; i = take() {
			fn(i)
		}
	}
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() {
			defer wg.Done()
			run()
		}()
	}
	run()
	wg.Wait()
}
