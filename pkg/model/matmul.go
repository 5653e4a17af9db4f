package model

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvcache/kvcache/internal/half"
	"github.com/kvcache/kvcache/pkg/gguf"
)

// Matrix multiplication out[n][m] = x[n][k] · w[m][k]ᵀ with weights in
// their file encoding. Every output element follows the canonical
// reduction order of kernel.go, whatever the weight type's kernel, so an
// element's value does not depend on the batch size, the tiling, the
// goroutine split or the instruction set. This is what makes prefill
// results independent of how a prompt is split between imported KV and
// computed tokens.
//
// F32 weights feed the float32 kernels directly. F16 (and BF16 and the
// K-quants) are decoded to float32 one column block at a time into a
// per-goroutine scratch buffer that stays in cache while every activation
// row streams past it; f16→f32 is exact, so F16 gives the bits of its F32
// copy. Q8_0 weights are read as int8: the activations are quantized to
// Q8_0 once per matmul and dotted with int8 products (VNNI), as llama.cpp
// does.

// kernels is one instruction-set level's kernels; nil entries fall back to
// the portable code. Every set gives the same bits (kernel_test.go).
type kernels struct {
	name string
	// f32x4x4 computes 4 rows × 4 columns over n16*16 elements, out[r*4+c];
	// xs and ws are row strides in elements.
	f32x4x4 func(x *float32, xs int, w *float32, ws int, n16 int, out *float32)
	// f32x1x4 computes 1 row × 4 columns.
	f32x1x4 func(x *float32, w *float32, ws int, n16 int, out *float32)
	// f16x1x4 is f32x1x4 with f16 weights converted in the loop.
	f16x1x4 func(x *float32, w *uint16, ws int, n16 int, out *float32)
	// f16 converts a prefix of src into dst and returns its length.
	f16 func(dst []float32, src []uint16) int
	// q8x4x2 computes 4 rows × 2 Q8_0 columns over np block pairs; xd holds
	// per row 16 scales per block pair (see q8Acts).
	q8x4x2 func(x *int8, xs int, xd *float32, xds int, w *byte, ws int, np int, out *float32)
	// q8x4x4 computes 4 rows × 4 Q8_0 columns; xc holds per row the
	// accumulator start values of q8Acts.c (stride xds, as xd).
	q8x4x4 func(x *int8, xs int, xd *float32, xc *int32, xds int, w *byte, ws int, np int, out *float32)
	// q8x1x4 computes 1 row × 4 Q8_0 columns.
	q8x1x4 func(x *int8, xd *float32, w *byte, ws int, np int, out *float32)
	// pv4 and pv1 compute attention's weighted value sums for 4 rows / 1
	// row over hd64*64 dimensions (see pvRef).
	pv4 func(p *float32, ps int, nk int, v *float32, vs int, out *float32, os int, hd64 int)
	pv1 func(p *float32, nk int, v *float32, vs int, out *float32, hd64 int)
	// pv1sum is pv1 that also returns the float64 sum of p[:nk] in
	// increasing order.
	pv1sum func(p *float32, nk int, v *float32, vs int, out *float32, hd64 int) float64
	// qk1 computes attention's scaled scores of one query row against nk
	// keys (stride ks) over n16*16 dimensions, out[j] = dot·scale with
	// the canonical dot, and returns their maximum (its sign unspecified
	// when it is zero) and whether no score is NaN.
	qk1 func(q *float32, k *float32, ks int, n16 int, nk int, scale float32, out *float32) (float32, bool)
	// exp computes dst[i] = exp32(src[i]*a + b) for a prefix of src and
	// returns its length.
	exp func(dst, src []float32, a, b float32) int
	// quant is quantizeQ8 (the same bits) for rows of finite values; it
	// returns false, leaving q and d unspecified, if x holds a NaN or an
	// infinity.
	quant func(q []int8, d []float32, x []float32) bool
	// round sets dst[i] to src[i] rounded to f16 (as half.Round) for a
	// prefix of src and returns its length and whether every rounded
	// value is finite; dst may be src.
	round func(dst, src []float32) (int, bool)
	// half converts a prefix of src, little-endian f16 words, into dst
	// (as halfTo) and returns its length in values and whether every word
	// converted is finite.
	half func(dst []float32, src []byte) (int, bool)
	// halfOut converts a prefix of src to little-endian f16 words (round
	// to nearest even) and returns its length in values and whether every
	// word is finite.
	halfOut func(dst []byte, src []float32) (int, bool)
}

// quantizeQ8 quantizes a row to Q8_0 (see the portable quantizeQ8).
func (ks *kernels) quantizeQ8(q []int8, d []float32, x []float32) {
	if ks.quant != nil && ks.quant(q, d, x) {
		return
	}
	quantizeQ8(q, d, x)
}

// expAffine sets dst[i] = exp32(src[i]*a + b) (a = 1 or -1, so the
// product is exact and the result is exp32(src[i]+b) or exp32(b-src[i])).
func (ks *kernels) expAffine(dst, src []float32, a, b float32) {
	i := 0
	if ks.exp != nil {
		i = ks.exp(dst, src, a, b)
	}
	for ; i < len(src); i++ {
		dst[i] = exp32(src[i]*a + b)
	}
}

// portable is the pure-Go kernel set.
var portable = &kernels{name: "portable"}

// active is the kernel set in use: the fastest this CPU supports.
var active = kernelSets()[0]

// KernelName returns the instruction-set level of the matmul kernels in use
// ("avx512vnni", "avx512", "avx2" or "portable").
func KernelName() string { return active.name }

// f16ToF32 converts f16 bits to float32 with the active kernels.
func f16ToF32(dst []float32, src []uint16) { active.f16ToF32(dst, src) }

func (ks *kernels) f16ToF32(dst []float32, src []uint16) {
	i := 0
	if ks.f16 != nil {
		i = ks.f16(dst, src)
	}
	for ; i < len(src); i++ {
		dst[i] = half.ToFloat32(src[i])
	}
}

// matmul computes out[n][w.rows] = x[n][w.cols] · wᵀ with the active kernels.
func matmul(out, x []float32, w *weight, n int) { active.matmul(out, x, w, n) }

func (ks *kernels) matmul(out, x []float32, w *weight, n int) {
	k, m := w.cols, w.rows
	if n == 0 || m == 0 {
		return
	}
	if w.typ == gguf.Q8_0 {
		ks.matmulQ8(out, x, w, n)
		return
	}
	// Column blocks of W rows small enough to stay in L2 while every row
	// of x streams past them.
	ob := min(m, max(8, (96<<10)/(4*k))&^7)
	chunks := (m + ob - 1) / ob
	if w.typ == gguf.F32 {
		parallel(chunks, func(c int) {
			o0 := c * ob
			ks.f32Block(out, m, x, k, n, k, w.f32, k, o0, min(m, o0+ob))
		})
		return
	}
	if w.typ == gguf.F16 && n < 4 && ks.f16x1x4 != nil && k >= 16 {
		// Decode: each weight is used by at most three rows, so convert
		// it in the kernel instead of through scratch.
		parallel(chunks, func(c int) {
			o0 := c * ob
			ks.f16Direct(out, m, x, n, k, f16Rows(w, 0, m), o0, min(m, o0+ob))
		})
		return
	}
	parallel(chunks, func(c int) {
		o0 := c * ob
		o1 := min(m, o0+ob)
		buf := scratch.Get().(*[]float32)
		if cap(*buf) < (o1-o0)*k {
			*buf = make([]float32, ob*k)
		}
		wf := (*buf)[:(o1-o0)*k]
		if w.typ == gguf.F16 {
			ks.f16ToF32(wf, f16Rows(w, o0, o1))
		} else {
			w.rows2f32(o0, o1, wf)
		}
		// wf row 0 is W row o0: shift the output so columns line up.
		ks.f32Block(out[o0:], m, x, k, n, k, wf, k, 0, o1-o0)
		scratch.Put(buf)
	})
}

// f16Direct computes columns [o0,o1) of n rows against f16 weights with
// the fused kernel; the k%16 tail and leftover columns convert exactly and
// take the portable order, so the bits equal the scratch path's.
func (ks *kernels) f16Direct(out []float32, ldo int, x []float32, n, k int, w []uint16, o0, o1 int) {
	k16 := k &^ 15
	var tile [4]float32
	var wf []float32
	row := func(o int) []float32 {
		wf = slices.Grow(wf[:0], k)[:k]
		ks.f16ToF32(wf, w[o*k:(o+1)*k])
		return wf
	}
	for r := range n {
		xr := x[r*k : (r+1)*k]
		o := o0
		for ; o+4 <= o1; o += 4 {
			_ = w[(o+4)*k-1]
			ks.f16x1x4(&xr[0], &w[o*k], k, k16/16, &tile[0])
			for j := range 4 {
				s := tile[j]
				for i := k16; i < k; i++ {
					s = fma32(xr[i], half.ToFloat32(w[(o+j)*k+i]), s)
				}
				out[r*ldo+o+j] = s
			}
		}
		for ; o < o1; o++ {
			out[r*ldo+o] = dotF32(xr, row(o))
		}
	}
}

// scratch holds per-goroutine decoded weight blocks.
var scratch = sync.Pool{New: func() any { return new([]float32) }}

// f32Block computes columns [o0,o1) of every row: out[r*ldo+o] =
// x[r]·w[o] over k elements, x row r at x[r*xs:], w row o at w[o*ws:].
func (ks *kernels) f32Block(out []float32, ldo int, x []float32, xs, n, k int, w []float32, ws, o0, o1 int) {
	k16 := k &^ 15
	n16 := k16 / 16
	var tile [16]float32
	xr := func(r int) []float32 { return x[r*xs : r*xs+k] }
	wr := func(o int) []float32 { return w[o*ws : o*ws+k] }
	set := func(r, o int, s float32) {
		out[r*ldo+o] = tailF32(s, xr(r)[k16:], wr(o)[k16:])
	}
	r := 0
	if ks.f32x4x4 != nil && n16 > 0 {
		for ; r+4 <= n; r += 4 {
			_ = x[(r+3)*xs+k-1] // the kernel reads rows r..r+3
			o := o0
			for ; o+4 <= o1; o += 4 {
				_ = w[(o+3)*ws+k-1]
				ks.f32x4x4(&x[r*xs], xs, &w[o*ws], ws, n16, &tile[0])
				for i := range 4 {
					for j := range 4 {
						set(r+i, o+j, tile[i*4+j])
					}
				}
			}
			for ; o < o1; o++ {
				for i := range 4 {
					out[(r+i)*ldo+o] = dotF32(xr(r+i), wr(o))
				}
			}
		}
	}
	for ; r < n; r++ {
		o := o0
		if ks.f32x1x4 != nil && n16 > 0 {
			_ = x[r*xs+k-1]
			for ; o+4 <= o1; o += 4 {
				_ = w[(o+3)*ws+k-1]
				ks.f32x1x4(&x[r*xs], &w[o*ws], ws, n16, &tile[0])
				for j := range 4 {
					set(r, o+j, tile[j])
				}
			}
		}
		for ; o < o1; o++ {
			out[r*ldo+o] = dotF32(xr(r), wr(o))
		}
	}
}

// parallel runs fn(i) for i in [0,n) on up to GOMAXPROCS goroutines
// (the caller included) and returns when every call has returned. Work is
// handed out by a shared counter, so uneven items balance, and the caller
// takes items too, so it never waits for a helper to start: a helper that
// arrives after the last item was claimed finds nothing to do.
//
// Decode runs about seven matmuls per layer, each a few tens of
// microseconds, so helpers are kept between calls: a helper polls for the
// next job for helperSpin after its last one before it exits (no goroutine
// outlives a burst of work by more than that), and a call starts helpers
// only when fewer than it can use are alive. Waking a parked goroutine per
// matmul cost more than the matmul's second thread gained.
func parallel(n int, fn func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := 0; i < n; i++ {
			fn(i)
		}
		return
	}
	j := &job{fn: fn, n: int64(n), finished: make(chan struct{})}
	for range workers - 1 {
		select {
		case jobs <- j:
		default: // queue full of jobs helpers have not seen: run without
		}
	}
	for a := helpersAlive.Load(); a < int32(workers-1); a = helpersAlive.Load() {
		if helpersAlive.CompareAndSwap(a, a+1) {
			go helper()
		}
	}
	j.run()
	for spin := 0; j.done.Load() < j.n; spin++ {
		if spin == 64 {
			<-j.finished
			break
		}
		runtime.Gosched()
	}
}

// job is one parallel call.
type job struct {
	fn       func(i int)
	n        int64
	next     atomic.Int64 // next item to claim
	done     atomic.Int64 // items finished
	finished chan struct{}
}

// run claims and runs items until none are left.
func (j *job) run() {
	for i := j.next.Add(1) - 1; i < j.n; i = j.next.Add(1) - 1 {
		j.fn(int(i))
		if j.done.Add(1) == j.n {
			close(j.finished)
		}
	}
}

// helperSpin is how long an idle helper polls for a job before it exits.
const helperSpin = 200 * time.Microsecond

var (
	jobs         = make(chan *job, 256)
	helpersAlive atomic.Int32
)

func helper() {
	idle := time.Now()
	for {
		select {
		case j := <-jobs:
			j.run()
			idle = time.Now()
			continue
		default:
		}
		if time.Since(idle) > helperSpin {
			helpersAlive.Add(-1)
			// A job queued while this helper was leaving is still run by
			// its caller; take it over if nobody else is left to help.
			if len(jobs) == 0 || !helpersAlive.CompareAndSwap(0, 1) {
				return
			}
			idle = time.Now()
		}
		runtime.Gosched()
	}
}

// dot is the attention kernels' reduction: one accumulator, increasing
// index, no fused multiply-add.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s float32
	for i, v := range a {
		s += float32(v * b[i])
	}
	return s
}
