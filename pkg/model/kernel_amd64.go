//go:build amd64 && !purego

package model

import "golang.org/x/sys/cpu"

// Assembly kernels (kernel_amd64.s); see kernel.go for the order they keep.
// The pointers must cover every element the kernel reads.

//go:noescape
func f32x4x4AVX512(x *float32, xs int, w *float32, ws int, n16 int, out *float32)

//go:noescape
func f32x1x4AVX512(x *float32, w *float32, ws int, n16 int, out *float32)

//go:noescape
func f32x1x4AVX2(x *float32, w *float32, ws int, n16 int, out *float32)

//go:noescape
func f16ToF32AVX512(dst *float32, src *uint16, n16 int)

//go:noescape
func f16ToF32F16C(dst *float32, src *uint16, n8 int)

//go:noescape
func halfToF32AVX512(dst *float32, src *byte, n16 int) (finite bool)

//go:noescape
func halfToF32F16C(dst *float32, src *byte, n16 int) (finite bool)

//go:noescape
func f32ToHalfF16C(dst *byte, src *float32, n8 int) (finite bool)

//go:noescape
func roundF16F16C(dst *float32, src *float32, n8 int) (finite bool)

//go:noescape
func q8x4x2VNNI(x *int8, xs int, xd *float32, xds int, w *byte, ws int, np int, out *float32)

//go:noescape
func q8x4x4VNNI(x *int8, xs int, xd *float32, xc *int32, xds int, w *byte, ws int, np int, out *float32)

//go:noescape
func q8x1x4VNNI(x *int8, xd *float32, w *byte, ws int, np int, out *float32)

//go:noescape
func f16x1x4AVX512(x *float32, w *uint16, ws int, n16 int, out *float32)

//go:noescape
func quantQ8AVX512(q *int8, d *float32, x *float32, nb int) bool

//go:noescape
func exp32AVX512(dst *float32, src *float32, n16 int, a float32, b float32)

//go:noescape
func pv4AVX512(p *float32, ps int, nk int, v *float32, vs int, out *float32, os int, hd64 int)

//go:noescape
func qk1AVX512(q *float32, k *float32, ks int, n16 int, nk int, scale float32, out *float32) (m float32, ordered bool)

//go:noescape
func pv1SumAVX512(p *float32, nk int, v *float32, vs int, out *float32, hd64 int) (sum float64)

//go:noescape
func pv1AVX512(p *float32, nk int, v *float32, vs int, out *float32, hd64 int)

// kernelSets lists the kernel sets this CPU can run, fastest first; the
// portable set is always last.
func kernelSets() []*kernels {
	var ks []*kernels
	x := cpu.X86
	if x.HasAVX512F && x.HasAVX512DQ && x.HasAVX512BW && x.HasAVX512VL && x.HasFMA && x.HasF16C {
		k := &kernels{name: "avx512", f32x4x4: f32x4x4AVX512, f32x1x4: f32x1x4AVX512, f16: f16x16AVX512,
			f16x1x4: f16x1x4AVX512, pv4: pv4AVX512, pv1: pv1AVX512, qk1: qk1AVX512, pv1sum: pv1SumAVX512, exp: exp16AVX512, quant: quantQ8x32AVX512, round: round8F16C,
			half: half16AVX512, halfOut: toHalf8F16C}
		if x.HasAVX512VNNI {
			k.name = "avx512vnni"
			k.q8x4x4, k.q8x4x2, k.q8x1x4 = q8x4x4VNNI, q8x4x2VNNI, q8x1x4VNNI
		}
		ks = append(ks, k)
	}
	if x.HasAVX2 && x.HasFMA && x.HasF16C {
		ks = append(ks, &kernels{name: "avx2", f32x1x4: f32x1x4AVX2, f16: f16x8F16C, round: round8F16C, half: half16F16C, halfOut: toHalf8F16C})
	}
	return append(ks, portable)
}

func f16x16AVX512(dst []float32, src []uint16) int {
	n := len(src) &^ 15
	if n > 0 {
		f16ToF32AVX512(&dst[0], &src[0], n/16)
	}
	return n
}

func f16x8F16C(dst []float32, src []uint16) int {
	n := len(src) &^ 7
	if n > 0 {
		f16ToF32F16C(&dst[0], &src[0], n/8)
	}
	return n
}

func round8F16C(dst, src []float32) (int, bool) {
	n := len(src) &^ 7
	if n == 0 {
		return 0, true
	}
	_ = dst[n-1]
	return n, roundF16F16C(&dst[0], &src[0], n/8)
}

func exp16AVX512(dst, src []float32, a, b float32) int {
	n := len(src) &^ 15
	if n > 0 {
		_ = dst[n-1]
		exp32AVX512(&dst[0], &src[0], n/16, a, b)
	}
	return n
}

func quantQ8x32AVX512(q []int8, d []float32, x []float32) bool {
	nb := len(x) / q8Elems
	if nb == 0 {
		return true
	}
	_, _ = q[nb*q8Elems-1], d[nb-1]
	return quantQ8AVX512(&q[0], &d[0], &x[0], nb)
}

func half16AVX512(dst []float32, src []byte) (int, bool) {
	n := min(len(dst), len(src)/2) &^ 15
	if n == 0 {
		return 0, true
	}
	_, _ = dst[n-1], src[2*n-1]
	return n, halfToF32AVX512(&dst[0], &src[0], n/16)
}

func half16F16C(dst []float32, src []byte) (int, bool) {
	n := min(len(dst), len(src)/2) &^ 15
	if n == 0 {
		return 0, true
	}
	_, _ = dst[n-1], src[2*n-1]
	return n, halfToF32F16C(&dst[0], &src[0], n/16)
}

func toHalf8F16C(dst []byte, src []float32) (int, bool) {
	n := min(len(dst)/2, len(src)) &^ 7
	if n == 0 {
		return 0, true
	}
	_, _ = dst[2*n-1], src[n-1]
	return n, f32ToHalfF16C(&dst[0], &src[0], n/8)
}
