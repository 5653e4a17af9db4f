//go:build amd64 && !purego

#include "textflag.h"

// SIMD kernels for the matmul drivers in matmul.go. Every kernel keeps the
// canonical reduction order of kernel.go: output (r, c) has 16 float32 lanes,
// lane l accumulating the elements l, l+16, l+32, ... with one fused
// multiply-add each, and the lanes are summed by one fixed tree
// (l+8, then +4, +2, +1). The portable code emulates exactly that, so every
// path gives the same bits.

// REDUCE16 sums the 16 lanes of zmm Z (low halves Y, X) in the canonical
// tree order and stores the float32 at dst. Clobbers Y30/X30.
#define REDUCE16(Z, Y, X, dst) \
	VEXTRACTF32X8 $1, Z, Y30 \
	VADDPS        Y30, Y, Y \
	VEXTRACTF32X4 $1, Y, X30 \
	VADDPS        X30, X, X \
	VMOVHLPS      X, X, X30 \
	VADDPS        X30, X, X \
	VMOVSHDUP     X, X30 \
	VADDSS        X30, X, X \
	VMOVSS        X, dst

// REDUCE8x2 is REDUCE16 for an accumulator split over two ymm registers
// (lo = lanes 0-7, hi = lanes 8-15). Clobbers X15.
#define REDUCE8x2(LO, HI, X, dst) \
	VADDPS        HI, LO, LO \
	VEXTRACTF128  $1, LO, X15 \
	VADDPS        X15, X, X \
	VMOVHLPS      X, X, X15 \
	VADDPS        X15, X, X \
	VMOVSHDUP     X, X15 \
	VADDSS        X15, X, X \
	VMOVSS        X, dst

// func f32x4x4AVX512(x *float32, xs int, w *float32, ws int, n16 int, out *float32)
// out[r*4+c] = dot(x row r, w row c) over n16*16 elements; xs and ws are
// row strides in elements.
TEXT ·f32x4x4AVX512(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ xs+8(FP), R8
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R9
	MOVQ w+16(FP), DI
	MOVQ ws+24(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ n16+32(FP), CX
	MOVQ out+40(FP), DX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	TESTQ CX, CX
	JZ    f44reduce

f44loop:
	VMOVUPS     (SI), Z16
	VMOVUPS     (SI)(R8*1), Z17
	VMOVUPS     (SI)(R8*2), Z18
	VMOVUPS     (SI)(R9*1), Z19
	VMOVUPS     (DI), Z20
	VMOVUPS     (DI)(R10*1), Z21
	VMOVUPS     (DI)(R10*2), Z22
	VMOVUPS     (DI)(R11*1), Z23
	VFMADD231PS Z20, Z16, Z0
	VFMADD231PS Z21, Z16, Z1
	VFMADD231PS Z22, Z16, Z2
	VFMADD231PS Z23, Z16, Z3
	VFMADD231PS Z20, Z17, Z4
	VFMADD231PS Z21, Z17, Z5
	VFMADD231PS Z22, Z17, Z6
	VFMADD231PS Z23, Z17, Z7
	VFMADD231PS Z20, Z18, Z8
	VFMADD231PS Z21, Z18, Z9
	VFMADD231PS Z22, Z18, Z10
	VFMADD231PS Z23, Z18, Z11
	VFMADD231PS Z20, Z19, Z12
	VFMADD231PS Z21, Z19, Z13
	VFMADD231PS Z22, Z19, Z14
	VFMADD231PS Z23, Z19, Z15
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         f44loop

f44reduce:
	REDUCE16(Z0, Y0, X0, 0(DX))
	REDUCE16(Z1, Y1, X1, 4(DX))
	REDUCE16(Z2, Y2, X2, 8(DX))
	REDUCE16(Z3, Y3, X3, 12(DX))
	REDUCE16(Z4, Y4, X4, 16(DX))
	REDUCE16(Z5, Y5, X5, 20(DX))
	REDUCE16(Z6, Y6, X6, 24(DX))
	REDUCE16(Z7, Y7, X7, 28(DX))
	REDUCE16(Z8, Y8, X8, 32(DX))
	REDUCE16(Z9, Y9, X9, 36(DX))
	REDUCE16(Z10, Y10, X10, 40(DX))
	REDUCE16(Z11, Y11, X11, 44(DX))
	REDUCE16(Z12, Y12, X12, 48(DX))
	REDUCE16(Z13, Y13, X13, 52(DX))
	REDUCE16(Z14, Y14, X14, 56(DX))
	REDUCE16(Z15, Y15, X15, 60(DX))
	VZEROUPPER
	RET

// func f32x1x4AVX512(x *float32, w *float32, ws int, n16 int, out *float32)
// out[c] = dot(x, w row c), c < 4.
TEXT ·f32x1x4AVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ ws+16(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ n16+24(FP), CX
	MOVQ out+32(FP), DX
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ CX, CX
	JZ    f14reduce

f14loop:
	VMOVUPS     (SI), Z16
	VFMADD231PS (DI), Z16, Z0
	VFMADD231PS (DI)(R10*1), Z16, Z1
	VFMADD231PS (DI)(R10*2), Z16, Z2
	VFMADD231PS (DI)(R11*1), Z16, Z3
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         f14loop

f14reduce:
	REDUCE16(Z0, Y0, X0, 0(DX))
	REDUCE16(Z1, Y1, X1, 4(DX))
	REDUCE16(Z2, Y2, X2, 8(DX))
	REDUCE16(Z3, Y3, X3, 12(DX))
	VZEROUPPER
	RET

// func f32x1x4AVX2(x *float32, w *float32, ws int, n16 int, out *float32)
// As f32x1x4AVX512 with each 16-lane accumulator in two ymm registers.
TEXT ·f32x1x4AVX2(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ ws+16(FP), R10
	SHLQ $2, R10
	LEAQ (R10)(R10*2), R11
	MOVQ n16+24(FP), CX
	MOVQ out+32(FP), DX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	TESTQ CX, CX
	JZ    a14reduce

a14loop:
	VMOVUPS     (SI), Y8
	VMOVUPS     32(SI), Y9
	VFMADD231PS (DI), Y8, Y0
	VFMADD231PS 32(DI), Y9, Y1
	VFMADD231PS (DI)(R10*1), Y8, Y2
	VFMADD231PS 32(DI)(R10*1), Y9, Y3
	VFMADD231PS (DI)(R10*2), Y8, Y4
	VFMADD231PS 32(DI)(R10*2), Y9, Y5
	VFMADD231PS (DI)(R11*1), Y8, Y6
	VFMADD231PS 32(DI)(R11*1), Y9, Y7
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         a14loop

a14reduce:
	REDUCE8x2(Y0, Y1, X0, 0(DX))
	REDUCE8x2(Y2, Y3, X2, 4(DX))
	REDUCE8x2(Y4, Y5, X4, 8(DX))
	REDUCE8x2(Y6, Y7, X6, 12(DX))
	VZEROUPPER
	RET

// func f16ToF32AVX512(dst *float32, src *uint16, n16 int)
TEXT ·f16ToF32AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n16+16(FP), CX
	TESTQ CX, CX
	JZ    h16done

h16loop:
	VCVTPH2PS (SI), Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       h16loop

h16done:
	VZEROUPPER
	RET

// func f16ToF32F16C(dst *float32, src *uint16, n8 int)
TEXT ·f16ToF32F16C(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n8+16(FP), CX
	TESTQ CX, CX
	JZ    h8done

h8loop:
	VCVTPH2PS (SI), Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $16, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       h8loop

h8done:
	VZEROUPPER
	RET

// Q8_0 x Q8_0 with AVX-512 VNNI. A weight row is nb 34-byte blocks (f16
// scale, 32 int8); an activation row is nb*32 int8 with, per pair of
// blocks, 16 float32 scales (8 copies of each block's scale). Each pair
// of blocks fills the 16 lanes: block 2p in lanes 0-7, 2p+1 in lanes 8-15;
// int32 lane j of a block holds the exact sum of its products 4j..4j+3,
// computed as (x+128)*w - 128*w with the unsigned-by-signed dot product,
// then acc = fma(dx*dw, float(sum), acc).

// Q8COL loads the weight pair at P into W, -128*sum(w) per lane into NEG
// and the 16 weight scales into D. Uses Z24 as a temporary.
#define Q8COL(P, W, NEG, D, YD, XD) \
	VMOVDQU32     2(P), Y24 \
	VINSERTI64X4  $1, 36(P), Z24, W \
	VPXORD        NEG, NEG, NEG \
	VPDPBUSD      W, Z28, NEG \
	VPSLLD        $7, NEG, NEG \
	VPSUBD        NEG, Z30, NEG \
	VPBROADCASTW  (P), YD \
	VCVTPH2PS     XD, YD \
	VPBROADCASTW  34(P), Y24 \
	VCVTPH2PS     X24, Y24 \
	VINSERTF32X8  $1, Y24, D, D

// Q8MAC accumulates one (row, column) pair into ACC.
#define Q8MAC(XU, DX, W, NEG, DW, ACC) \
	VMOVDQA32   NEG, Z22 \
	VPDPBUSD    W, XU, Z22 \
	VCVTDQ2PS   Z22, Z22 \
	VMULPS      DW, DX, Z23 \
	VFMADD231PS Z23, Z22, ACC

// func q8x4x2VNNI(x *int8, xs int, xd *float32, xds int, w *byte, ws int, np int, out *float32)
// Four activation rows (stride xs bytes; scales stride xds bytes) by two
// weight rows (stride ws bytes), np block pairs; out[r*2+c].
TEXT ·q8x4x2VNNI(SB), NOSPLIT, $0-64
	MOVQ x+0(FP), SI
	MOVQ xs+8(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ xd+16(FP), DX
	MOVQ xds+24(FP), R12
	LEAQ (R12)(R12*2), R13
	MOVQ w+32(FP), DI
	MOVQ ws+40(FP), R10
	MOVQ np+48(FP), CX
	MOVQ out+56(FP), BX
	MOVL $0x01010101, AX
	VPBROADCASTD AX, Z28
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	TESTQ CX, CX
	JZ    q42reduce

q42loop:
	LEAQ  (DI)(R10*1), R11
	Q8COL(DI, Z8, Z10, Z12, Y12, X12)
	Q8COL(R11, Z9, Z11, Z13, Y13, X13)
	VPXORD  (SI), Z29, Z14
	VPXORD  (SI)(R8*1), Z29, Z15
	VPXORD  (SI)(R8*2), Z29, Z16
	VPXORD  (SI)(R9*1), Z29, Z17
	VMOVUPS (DX), Z18
	VMOVUPS (DX)(R12*1), Z19
	VMOVUPS (DX)(R12*2), Z20
	VMOVUPS (DX)(R13*1), Z21
	Q8MAC(Z14, Z18, Z8, Z10, Z12, Z0)
	Q8MAC(Z14, Z18, Z9, Z11, Z13, Z1)
	Q8MAC(Z15, Z19, Z8, Z10, Z12, Z2)
	Q8MAC(Z15, Z19, Z9, Z11, Z13, Z3)
	Q8MAC(Z16, Z20, Z8, Z10, Z12, Z4)
	Q8MAC(Z16, Z20, Z9, Z11, Z13, Z5)
	Q8MAC(Z17, Z21, Z8, Z10, Z12, Z6)
	Q8MAC(Z17, Z21, Z9, Z11, Z13, Z7)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $68, DI
	DECQ CX
	JNZ  q42loop

q42reduce:
	REDUCE16(Z0, Y0, X0, 0(BX))
	REDUCE16(Z1, Y1, X1, 4(BX))
	REDUCE16(Z2, Y2, X2, 8(BX))
	REDUCE16(Z3, Y3, X3, 12(BX))
	REDUCE16(Z4, Y4, X4, 16(BX))
	REDUCE16(Z5, Y5, X5, 20(BX))
	REDUCE16(Z6, Y6, X6, 24(BX))
	REDUCE16(Z7, Y7, X7, 28(BX))
	VZEROUPPER
	RET

// func q8x1x4VNNI(x *int8, xd *float32, w *byte, ws int, np int, out *float32)
// One activation row by four weight rows; out[c]. As in f16x1x4AVX512,
// each iteration prefetches the next four rows' share (R14).
TEXT ·q8x1x4VNNI(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ xd+8(FP), DX
	MOVQ w+16(FP), DI
	MOVQ ws+24(FP), R10
	MOVQ np+32(FP), CX
	MOVQ out+40(FP), BX
	LEAQ (DI)(R10*4), R14
	MOVL $0x01010101, AX
	VPBROADCASTD AX, Z28
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z29
	VPXORD Z30, Z30, Z30
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ CX, CX
	JZ    q14reduce

q14loop:
	PREFETCHT0 (R14)
	PREFETCHT0 64(R14)
	PREFETCHT0 128(R14)
	PREFETCHT0 192(R14)
	PREFETCHT0 256(R14)
	ADDQ       $272, R14
	LEAQ  (DI)(R10*1), R11
	LEAQ  (DI)(R10*2), R12
	LEAQ  (R11)(R10*2), R13
	Q8COL(DI, Z8, Z10, Z12, Y12, X12)
	Q8COL(R11, Z9, Z11, Z13, Y13, X13)
	Q8COL(R12, Z4, Z5, Z6, Y6, X6)
	Q8COL(R13, Z7, Z15, Z16, Y16, X16)
	VPXORD  (SI), Z29, Z14
	VMOVUPS (DX), Z18
	Q8MAC(Z14, Z18, Z8, Z10, Z12, Z0)
	Q8MAC(Z14, Z18, Z9, Z11, Z13, Z1)
	Q8MAC(Z14, Z18, Z4, Z5, Z6, Z2)
	Q8MAC(Z14, Z18, Z7, Z15, Z16, Z3)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $68, DI
	DECQ CX
	JNZ  q14loop

q14reduce:
	REDUCE16(Z0, Y0, X0, 0(BX))
	REDUCE16(Z1, Y1, X1, 4(BX))
	REDUCE16(Z2, Y2, X2, 8(BX))
	REDUCE16(Z3, Y3, X3, 12(BX))
	VZEROUPPER
	RET

// Attention's weighted value sum: out[r][d] += p[r][j] * v[j][d] for
// j < nk, one fused multiply-add chain per (r, d) in increasing j (the
// order of pvRef), for d < hd64*64.

// func pv4AVX512(p *float32, ps int, nk int, v *float32, vs int, out *float32, os int, hd64 int)
// Four rows of p (stride ps elements), v rows stride vs, out rows stride os.
TEXT ·pv4AVX512(SB), NOSPLIT, $0-64
	MOVQ p+0(FP), SI
	MOVQ ps+8(FP), R8
	SHLQ $2, R8
	LEAQ (R8)(R8*2), R13
	MOVQ nk+16(FP), R9
	MOVQ v+24(FP), DI
	MOVQ vs+32(FP), R10
	SHLQ $2, R10
	MOVQ out+40(FP), DX
	MOVQ os+48(FP), R11
	SHLQ $2, R11
	MOVQ hd64+56(FP), R12

pv4chunk:
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS 128(DX), Z2
	VMOVUPS 192(DX), Z3
	VMOVUPS (DX)(R11*1), Z4
	VMOVUPS 64(DX)(R11*1), Z5
	VMOVUPS 128(DX)(R11*1), Z6
	VMOVUPS 192(DX)(R11*1), Z7
	VMOVUPS (DX)(R11*2), Z8
	VMOVUPS 64(DX)(R11*2), Z9
	VMOVUPS 128(DX)(R11*2), Z10
	VMOVUPS 192(DX)(R11*2), Z11
	LEAQ    (DX)(R11*2), BX
	VMOVUPS (BX)(R11*1), Z12
	VMOVUPS 64(BX)(R11*1), Z13
	VMOVUPS 128(BX)(R11*1), Z14
	VMOVUPS 192(BX)(R11*1), Z15
	MOVQ   SI, AX
	MOVQ   DI, BX
	MOVQ   R9, CX
	TESTQ  CX, CX
	JZ     pv4store

pv4loop:
	VMOVUPS      (BX), Z16
	VMOVUPS      64(BX), Z17
	VMOVUPS      128(BX), Z18
	VMOVUPS      192(BX), Z19
	VBROADCASTSS (AX), Z20
	VBROADCASTSS (AX)(R8*1), Z21
	VBROADCASTSS (AX)(R8*2), Z22
	VBROADCASTSS (AX)(R13*1), Z23
	VFMADD231PS  Z16, Z20, Z0
	VFMADD231PS  Z17, Z20, Z1
	VFMADD231PS  Z18, Z20, Z2
	VFMADD231PS  Z19, Z20, Z3
	VFMADD231PS  Z16, Z21, Z4
	VFMADD231PS  Z17, Z21, Z5
	VFMADD231PS  Z18, Z21, Z6
	VFMADD231PS  Z19, Z21, Z7
	VFMADD231PS  Z16, Z22, Z8
	VFMADD231PS  Z17, Z22, Z9
	VFMADD231PS  Z18, Z22, Z10
	VFMADD231PS  Z19, Z22, Z11
	VFMADD231PS  Z16, Z23, Z12
	VFMADD231PS  Z17, Z23, Z13
	VFMADD231PS  Z18, Z23, Z14
	VFMADD231PS  Z19, Z23, Z15
	ADDQ         $4, AX
	ADDQ         R10, BX
	DECQ         CX
	JNZ          pv4loop

pv4store:
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	VMOVUPS Z4, (DX)(R11*1)
	VMOVUPS Z5, 64(DX)(R11*1)
	VMOVUPS Z6, 128(DX)(R11*1)
	VMOVUPS Z7, 192(DX)(R11*1)
	VMOVUPS Z8, (DX)(R11*2)
	VMOVUPS Z9, 64(DX)(R11*2)
	VMOVUPS Z10, 128(DX)(R11*2)
	VMOVUPS Z11, 192(DX)(R11*2)
	LEAQ    (DX)(R11*2), BX
	VMOVUPS Z12, (BX)(R11*1)
	VMOVUPS Z13, 64(BX)(R11*1)
	VMOVUPS Z14, 128(BX)(R11*1)
	VMOVUPS Z15, 192(BX)(R11*1)
	ADDQ    $256, DI
	ADDQ    $256, DX
	DECQ    R12
	JNZ     pv4chunk
	VZEROUPPER
	RET

// func pv1AVX512(p *float32, nk int, v *float32, vs int, out *float32, hd64 int)
TEXT ·pv1AVX512(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), SI
	MOVQ nk+8(FP), R9
	MOVQ v+16(FP), DI
	MOVQ vs+24(FP), R10
	SHLQ $2, R10
	MOVQ out+32(FP), DX
	MOVQ hd64+40(FP), R12

pv1chunk:
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS 128(DX), Z2
	VMOVUPS 192(DX), Z3
	MOVQ   SI, AX
	MOVQ   DI, BX
	MOVQ   R9, CX
	TESTQ  CX, CX
	JZ     pv1store

pv1loop:
	VBROADCASTSS (AX), Z20
	VFMADD231PS  (BX), Z20, Z0
	VFMADD231PS  64(BX), Z20, Z1
	VFMADD231PS  128(BX), Z20, Z2
	VFMADD231PS  192(BX), Z20, Z3
	ADDQ         $4, AX
	ADDQ         R10, BX
	DECQ         CX
	JNZ          pv1loop

pv1store:
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	ADDQ    $256, DI
	ADDQ    $256, DX
	DECQ    R12
	JNZ     pv1chunk
	VZEROUPPER
	RET

// func f16x1x4AVX512(x *float32, w *uint16, ws int, n16 int, out *float32)
// As f32x1x4AVX512 with f16 weights converted in the loop (exact), for
// decode, where each weight is used once. Decode streams every weight from
// DRAM, and the four short row streams (1.5-4 KiB each) do not train the
// hardware prefetcher well, so each iteration also prefetches two lines of
// the next four rows (R12): by the time the caller gets there they are in
// flight (decode-sized F16 matmuls: 1.4x faster).
TEXT ·f16x1x4AVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ w+8(FP), DI
	MOVQ ws+16(FP), R10
	SHLQ $1, R10
	LEAQ (R10)(R10*2), R11
	MOVQ n16+24(FP), CX
	MOVQ out+32(FP), DX
	LEAQ (DI)(R10*4), R12
	LEAQ (R12)(R10*4), R12
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	TESTQ CX, CX
	JZ    h14reduce

h14loop:
	PREFETCHT0  (R12)
	PREFETCHT0  64(R12)
	ADDQ        $128, R12
	VMOVUPS     (SI), Z16
	VCVTPH2PS   (DI), Z20
	VCVTPH2PS   (DI)(R10*1), Z21
	VCVTPH2PS   (DI)(R10*2), Z22
	VCVTPH2PS   (DI)(R11*1), Z23
	VFMADD231PS Z20, Z16, Z0
	VFMADD231PS Z21, Z16, Z1
	VFMADD231PS Z22, Z16, Z2
	VFMADD231PS Z23, Z16, Z3
	ADDQ        $64, SI
	ADDQ        $32, DI
	DECQ        CX
	JNZ         h14loop

h14reduce:
	REDUCE16(Z0, Y0, X0, 0(DX))
	REDUCE16(Z1, Y1, X1, 4(DX))
	REDUCE16(Z2, Y2, X2, 8(DX))
	REDUCE16(Z3, Y3, X3, 12(DX))
	VZEROUPPER
	RET

// func exp32AVX512(dst *float32, src *float32, n16 int, a float32, b float32)
// dst[i] = exp32(src[i]*a + b) for 16*n16 elements, with exactly the
// operations and rounding of the Go exp32 (no fused multiply-adds), so the
// bits are the same.
#define BCAST(bits, Z) MOVL $bits, AX; VPBROADCASTD AX, Z

TEXT ·exp32AVX512(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n16+16(FP), CX
	VBROADCASTSS a+24(FP), Z16
	VBROADCASTSS b+28(FP), Z17
	BCAST(0x3fb8aa3b, Z18)  // log2(e)
	BCAST(0x80000000, Z19)  // sign bit
	BCAST(0x3f000000, Z20)  // 0.5
	BCAST(0x3f318000, Z21)  // ln2 high
	BCAST(0xb95e8083, Z22)  // ln2 low term
	BCAST(0x39506967, Z23)  // p0
	BCAST(0x3ab743ce, Z24)  // p1
	BCAST(0x3c088908, Z25)  // p2
	BCAST(0x3d2aa9c1, Z26)  // p3
	BCAST(0x3e2aaaaa, Z27)  // p4
	BCAST(0x3f800000, Z28)  // 1
	BCAST(127, Z29)
	BCAST(0x42b17217, Z30)  // overflow threshold
	BCAST(0xc2aeac4f, Z31)  // underflow threshold
	TESTQ CX, CX
	JZ    expdone

exploop:
	VMOVUPS     (SI), Z0
	VMULPS      Z16, Z0, Z0
	VADDPS      Z17, Z0, Z0          // x
	VMULPS      Z18, Z0, Z1          // kf = x*log2e
	VPANDD      Z19, Z1, Z2
	VPORD       Z20, Z2, Z2          // +-0.5 with kf's sign
	VADDPS      Z2, Z1, Z1
	VCVTTPS2DQ  Z1, Z3               // k
	VCVTDQ2PS   Z3, Z4               // fk
	VMULPS      Z21, Z4, Z5
	VSUBPS      Z5, Z0, Z6           // r = x - fk*c1
	VMULPS      Z22, Z4, Z7
	VSUBPS      Z7, Z6, Z6           // r -= fk*c2
	VMULPS      Z6, Z23, Z8          // p0*r
	VADDPS      Z24, Z8, Z8
	VMULPS      Z6, Z8, Z8
	VADDPS      Z25, Z8, Z8
	VMULPS      Z6, Z8, Z8
	VADDPS      Z26, Z8, Z8
	VMULPS      Z6, Z8, Z8
	VADDPS      Z27, Z8, Z8
	VMULPS      Z6, Z8, Z8
	VADDPS      Z20, Z8, Z8          // p5 = 0.5
	VMULPS      Z6, Z6, Z9           // r*r
	VMULPS      Z9, Z8, Z8
	VADDPS      Z6, Z8, Z8
	VADDPS      Z28, Z8, Z8          // y
	VPCMPGTD    Z29, Z3, K1          // k > 127: y*2, then 2^127
	VADDPS      Z8, Z8, K1, Z8
	VPMINSD     Z29, Z3, Z10
	VPADDD      Z29, Z10, Z10
	VPSLLD      $23, Z10, Z10
	VMULPS      Z10, Z8, Z8
	VCMPPS      $0x1e, Z30, Z0, K2   // x > hi: +Inf
	MOVL        $0x7f800000, AX
	VPBROADCASTD AX, K2, Z8
	VCMPPS      $0x11, Z31, Z0, K3   // x < lo: 0
	VPXORD      Z8, Z8, K3, Z8
	VCMPPS      $0x03, Z0, Z0, K4    // NaN: x
	VMOVAPS     Z0, K4, Z8
	VMOVUPS     Z8, (DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         exploop

expdone:
	VZEROUPPER
	RET

// QROUND sets T to the int32 round-half-away-from-zero of the float32s in
// X (|X| < 2^23), using F, S and mask K as temporaries.
#define QROUND(X, T, F, S, K) \
	VRNDSCALEPS $0x0b, X, T \
	VSUBPS      T, X, F \
	VANDPS      Z31, F, F \
	VCMPPS      $0x1d, Z27, F, K \
	VPANDD      Z26, X, S \
	VPORD       Z25, S, S \
	VADDPS      S, T, K, T \
	VCVTPS2DQ   T, T

// func quantQ8AVX512(q *int8, d *float32, x *float32, nb int) (finite bool)
// Quantizes nb blocks of 32 activations to Q8_0 exactly as quantizeQ8
// does: d = max|x|/127, id = 1/d (0 when d is 0), q = round(x*id), halves
// away from zero (truncate, then step away from zero when the dropped part
// is at least 0.5: x - trunc(x) is exact). Returns false, with q and d
// unspecified, if any input is NaN or infinite; the caller then uses the
// Go code, whose NaN handling the SIMD max does not reproduce.
TEXT ·quantQ8AVX512(SB), NOSPLIT, $0-33
	MOVQ q+0(FP), DI
	MOVQ d+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ nb+24(FP), CX
	BCAST(0x7fffffff, Z31)  // abs mask
	BCAST(0x7f800000, Z30)  // +Inf
	BCAST(0x80000000, Z26)  // sign bit
	BCAST(0x3f800000, Z25)  // 1
	BCAST(0x3f000000, Z27)  // 0.5
	MOVL $0x42fe0000, AX    // 127
	VMOVD AX, X29
	MOVL $0x3f800000, AX
	VMOVD AX, X28           // 1 (scalar)
	KXORW K7, K7, K7
	TESTQ CX, CX
	JZ    qzdone

qzloop:
	VMOVUPS    (SI), Z0
	VMOVUPS    64(SI), Z1
	VANDPS     Z31, Z0, Z2
	VANDPS     Z31, Z1, Z3
	VCMPPS     $5, Z30, Z2, K1  // !(|x| < Inf): Inf or NaN
	VCMPPS     $5, Z30, Z3, K2
	KORW       K1, K7, K7
	KORW       K2, K7, K7
	VMAXPS     Z3, Z2, Z2
	VEXTRACTF32X8 $1, Z2, Y4
	VMAXPS     Y4, Y2, Y2
	VEXTRACTF128 $1, Y2, X4
	VMAXPS     X4, X2, X2
	VMOVHLPS   X2, X2, X4
	VMAXPS     X4, X2, X2
	VMOVSHDUP  X2, X4
	VMAXSS     X4, X2, X2       // amax
	VDIVSS     X29, X2, X5      // d = amax/127
	VMOVSS     X5, (DX)
	VXORPS     X6, X6, X6
	VUCOMISS   X6, X5
	JEQ        qzscale          // d == 0: id = 0
	VDIVSS     X5, X28, X6      // id = 1/d

qzscale:
	VBROADCASTSS X6, Z6
	VMULPS     Z6, Z0, Z0
	VMULPS     Z6, Z1, Z1
	QROUND(Z0, Z7, Z8, Z9, K3)
	QROUND(Z1, Z10, Z11, Z12, K4)
	VPMOVDB    Z7, (DI)
	VPMOVDB    Z10, 16(DI)
	ADDQ       $128, SI
	ADDQ       $32, DI
	ADDQ       $4, DX
	DECQ       CX
	JNZ        qzloop

qzdone:
	KORTESTW   K7, K7
	SETEQ      ret+32(FP)
	VZEROUPPER
	RET

// Q8_0 x Q8_0 tiles of 4 activation rows by 4 weight rows. Here the
// weights are the unsigned operand: w+128 (w XOR 0x80) times x sums to
// w·x + 128·Σx, and the int32 accumulator starts at xc = -128·Σx (per lane,
// from the activation quantizer), so each lane again holds the exact sum of
// its four products. Shifting the weights costs one XOR per weight vector,
// shared by the four rows, where shifting the activations needed the
// -128·Σw of every weight vector.

// Q8COLU loads the weight pair at P as unsigned (w+128) into W and its 16
// scales into D. Uses Z24 as a temporary.
#define Q8COLU(P, W, D, YD, XD) \
	VMOVDQU32     2(P), Y24 \
	VINSERTI64X4  $1, 36(P), Z24, W \
	VPXORD        Z29, W, W \
	VPBROADCASTW  (P), YD \
	VCVTPH2PS     XD, YD \
	VPBROADCASTW  34(P), Y24 \
	VCVTPH2PS     X24, Y24 \
	VINSERTF32X8  $1, Y24, D, D

// Q8MACU accumulates one (row, column) pair into ACC: XS signed
// activations, XC their start value, DX their scales.
#define Q8MACU(XS, XC, DX, W, DW, ACC) \
	VMOVDQA32   XC, Z25 \
	VPDPBUSD    XS, W, Z25 \
	VCVTDQ2PS   Z25, Z25 \
	VMULPS      DW, DX, Z26 \
	VFMADD231PS Z26, Z25, ACC

// Q8ROWU loads activation row R's block pair and accumulates it against
// the four columns into ACC0..ACC3.
#define Q8ROWU(XP, DP, CP, A0, A1, A2, A3) \
	VMOVDQU32 XP, Z27 \
	VMOVUPS   DP, Z28 \
	VMOVDQU32 CP, Z30 \
	Q8MACU(Z27, Z30, Z28, Z16, Z20, A0) \
	Q8MACU(Z27, Z30, Z28, Z17, Z21, A1) \
	Q8MACU(Z27, Z30, Z28, Z18, Z22, A2) \
	Q8MACU(Z27, Z30, Z28, Z19, Z23, A3)

// func q8x4x4VNNI(x *int8, xs int, xd *float32, xc *int32, xds int, w *byte, ws int, np int, out *float32)
// Four activation rows (stride xs bytes; scales and start values stride
// xds bytes) by four weight rows (stride ws bytes), np block pairs;
// out[r*4+c].
TEXT ·q8x4x4VNNI(SB), NOSPLIT, $0-72
	MOVQ x+0(FP), SI
	MOVQ xs+8(FP), R8
	LEAQ (R8)(R8*2), R9
	MOVQ xd+16(FP), DX
	MOVQ xc+24(FP), R14
	MOVQ xds+32(FP), R12
	LEAQ (R12)(R12*2), R13
	MOVQ w+40(FP), DI
	MOVQ ws+48(FP), R10
	LEAQ (R10)(R10*2), R11
	MOVQ np+56(FP), CX
	MOVL $0x80808080, AX
	VPBROADCASTD AX, Z29
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	TESTQ CX, CX
	JZ    q44reduce

q44loop:
	LEAQ  (DI)(R10*1), BX
	Q8COLU(DI, Z16, Z20, Y20, X20)
	Q8COLU(BX, Z17, Z21, Y21, X21)
	LEAQ  (DI)(R10*2), BX
	Q8COLU(BX, Z18, Z22, Y22, X22)
	LEAQ  (DI)(R11*1), BX
	Q8COLU(BX, Z19, Z23, Y23, X23)
	Q8ROWU((SI), (DX), (R14), Z0, Z1, Z2, Z3)
	Q8ROWU((SI)(R8*1), (DX)(R12*1), (R14)(R12*1), Z4, Z5, Z6, Z7)
	Q8ROWU((SI)(R8*2), (DX)(R12*2), (R14)(R12*2), Z8, Z9, Z10, Z11)
	Q8ROWU((SI)(R9*1), (DX)(R13*1), (R14)(R13*1), Z12, Z13, Z14, Z15)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $64, R14
	ADDQ $68, DI
	DECQ CX
	JNZ  q44loop

q44reduce:
	MOVQ out+64(FP), BX
	REDUCE16(Z0, Y0, X0, 0(BX))
	REDUCE16(Z1, Y1, X1, 4(BX))
	REDUCE16(Z2, Y2, X2, 8(BX))
	REDUCE16(Z3, Y3, X3, 12(BX))
	REDUCE16(Z4, Y4, X4, 16(BX))
	REDUCE16(Z5, Y5, X5, 20(BX))
	REDUCE16(Z6, Y6, X6, 24(BX))
	REDUCE16(Z7, Y7, X7, 28(BX))
	REDUCE16(Z8, Y8, X8, 32(BX))
	REDUCE16(Z9, Y9, X9, 36(BX))
	REDUCE16(Z10, Y10, X10, 40(BX))
	REDUCE16(Z11, Y11, X11, 44(BX))
	REDUCE16(Z12, Y12, X12, 48(BX))
	REDUCE16(Z13, Y13, X13, 52(BX))
	REDUCE16(Z14, Y14, X14, 56(BX))
	REDUCE16(Z15, Y15, X15, 60(BX))
	VZEROUPPER
	RET


// Rounding KV to f16 (Sequence.ImportBlock and every computed token):
// dst[i] = float32(f16(src[i])), round to nearest even, through the F16C
// conversions, which are exact IEEE conversions (subnormals, overflow to
// infinity, NaN made quiet), so the bits are those of half.Round. dst and
// src may be the same slice. It reports whether every result is finite
// (no f16 with the all-ones exponent 0x7c00).
//
// func roundF16F16C(dst *float32, src *float32, n8 int) (finite bool)
TEXT ·roundF16F16C(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n8+16(FP), CX
	MOVL $0x7c007c00, AX
	VMOVD        AX, X5
	VPBROADCASTD X5, X5
	VPXOR        X4, X4, X4
	TESTQ CX, CX
	JZ    r8done

r8loop:
	VMOVUPS   (SI), Y0
	VCVTPS2PH $0, Y0, X1
	VPAND     X5, X1, X2
	VPCMPEQW  X5, X2, X2
	VPOR      X2, X4, X4
	VCVTPH2PS X1, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $32, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       r8loop

r8done:
	VPTEST X4, X4
	SETEQ  finite+24(FP)
	VZEROUPPER
	RET

// Importing f16 KV: convert little-endian IEEE binary16 words to float32
// (exact) and report whether every word is finite, i.e. has an exponent
// other than all ones (Inf and NaN would poison attention). The check is
// the same integer test as the portable halfTo: (w & 0x7c00) == 0x7c00.
// Sixteen words per iteration; the result is the AND over all of them.

// HALFCHECK ORs into Y14 a 0xffff word wherever the 16 words of Y1 have an
// all-ones exponent (Y15 holds 0x7c00 in every word). Clobbers Y2.
#define HALFCHECK \
	VPAND    Y15, Y1, Y2 \
	VPCMPEQW Y15, Y2, Y2 \
	VPOR     Y2, Y14, Y14

// func halfToF32AVX512(dst *float32, src *byte, n16 int) (finite bool)
TEXT ·halfToF32AVX512(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n16+16(FP), CX
	MOVL         $0x7c00, AX
	VMOVD        AX, X15
	VPBROADCASTW X15, Y15
	VPXOR        Y14, Y14, Y14
	TESTQ        CX, CX
	JZ           hi16done

hi16loop:
	VMOVDQU   (SI), Y1
	HALFCHECK
	VCVTPH2PS Y1, Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $32, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       hi16loop

hi16done:
	VPTEST  Y14, Y14
	SETEQ   finite+24(FP)
	VZEROUPPER
	RET

// func halfToF32F16C(dst *float32, src *byte, n16 int) (finite bool)
TEXT ·halfToF32F16C(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n16+16(FP), CX
	MOVL         $0x7c00, AX
	VMOVD        AX, X15
	VPBROADCASTW X15, Y15
	VPXOR        Y14, Y14, Y14
	TESTQ        CX, CX
	JZ           hi8done

hi8loop:
	VMOVDQU      (SI), Y1
	HALFCHECK
	VCVTPH2PS    X1, Y0
	VEXTRACTI128 $1, Y1, X3
	VCVTPH2PS    X3, Y3
	VMOVUPS      Y0, (DI)
	VMOVUPS      Y3, 32(DI)
	ADDQ         $32, SI
	ADDQ         $64, DI
	DECQ         CX
	JNZ          hi8loop

hi8done:
	VPTEST  Y14, Y14
	SETEQ   finite+24(FP)
	VZEROUPPER
	RET

// Decode attention's scores: one query row against many keys. For key j,
// out[j] = dot(q, key j) * scale, the dot in the canonical order (lane l
// of a 16-lane accumulator takes elements l, l+16, ... with one fused
// multiply-add each, the lanes then summed by the tree of REDUCE16) and
// then rounded times scale, exactly as f32Block then attention's Go loop
// compute it. Sixteen keys per iteration: each chunk of 16 query elements
// is loaded once and multiplied into sixteen accumulators, and the sixteen
// lane trees are summed together, four levels of shuffles and adds that
// each add exactly the pairs REDUCE16 adds (lane i + lane i+8, then +4,
// +2, +1) for all keys at once.
//
// Accumulator Z(4p+b) takes key 4b+p: the four levels leave accumulator
// 4p+b's sum in lane 4b+p, so this assignment puts key i's score in lane i.

// QKFMA16 accumulates one 16-element chunk of the query (Z16) with the
// sixteen keys; AX, BX, R12, R13 point at keys 0, 4, 8 and 12 of the group
// (plus the chunk's offset), R10 is the key stride in bytes, R11 three
// times that.
#define QKFMA16 \
	VFMADD231PS (AX), Z16, Z0 \
	VFMADD231PS (BX), Z16, Z1 \
	VFMADD231PS (R12), Z16, Z2 \
	VFMADD231PS (R13), Z16, Z3 \
	VFMADD231PS (AX)(R10*1), Z16, Z4 \
	VFMADD231PS (BX)(R10*1), Z16, Z5 \
	VFMADD231PS (R12)(R10*1), Z16, Z6 \
	VFMADD231PS (R13)(R10*1), Z16, Z7 \
	VFMADD231PS (AX)(R10*2), Z16, Z8 \
	VFMADD231PS (BX)(R10*2), Z16, Z9 \
	VFMADD231PS (R12)(R10*2), Z16, Z10 \
	VFMADD231PS (R13)(R10*2), Z16, Z11 \
	VFMADD231PS (AX)(R11*1), Z16, Z12 \
	VFMADD231PS (BX)(R11*1), Z16, Z13 \
	VFMADD231PS (R12)(R11*1), Z16, Z14 \
	VFMADD231PS (R13)(R11*1), Z16, Z15

// PAIR8 sets D to [A's lanes i + i+8 (i < 8), B's lanes i + i+8].
#define PAIR8(A, B, D) \
	VSHUFF32X4 $0x44, B, A, Z19 \
	VSHUFF32X4 $0xee, B, A, Z20 \
	VADDPS     Z20, Z19, D

// PAIR4 takes A and B as PAIR8 left them (two sums of 8 lanes each) and
// sets D to the four sums of 4 lanes (i + i+4), one per 128-bit block.
#define PAIR4(A, B, D) \
	VSHUFF32X4 $0x88, B, A, Z19 \
	VSHUFF32X4 $0xdd, B, A, Z20 \
	VADDPS     Z20, Z19, D

// PAIR2 adds elements i and i+2 of every 4-lane block of A and B: per
// block [A's two sums, B's two sums].
#define PAIR2(A, B, D) \
	VSHUFPS $0x44, B, A, Z19 \
	VSHUFPS $0xee, B, A, Z20 \
	VADDPS  Z20, Z19, D

// PAIR1 adds the two sums of each key: per block [A0, A1, B0, B1].
#define PAIR1(A, B, D) \
	VSHUFPS $0x88, B, A, Z19 \
	VSHUFPS $0xdd, B, A, Z20 \
	VADDPS  Z20, Z19, D

// func qk1AVX512(q *float32, k *float32, ks int, n16 int, nk int, scale float32, out *float32) (m float32, ordered bool)
// Scores of nk keys (stride ks elements) over n16*16 dimensions into
// out[0:nk]. Returns the largest score (as VMAXPS finds it: the caller
// recomputes it when it is zero, where the sign may differ from Go's max)
// and whether no score is NaN (if one is, m means nothing).
TEXT ·qk1AVX512(SB), NOSPLIT, $0-61
	MOVQ         q+0(FP), SI
	MOVQ         k+8(FP), DI
	MOVQ         ks+16(FP), R10
	SHLQ         $2, R10
	LEAQ         (R10)(R10*2), R11
	MOVQ         n16+24(FP), R8
	MOVQ         nk+32(FP), R9
	VBROADCASTSS scale+40(FP), Z18
	MOVQ         out+48(FP), DX
	MOVL         $0xff800000, AX
	VPBROADCASTD AX, Z17 // running max, from -Inf
	KXORW        K2, K2, K2 // lanes that saw a NaN
	CMPQ         R9, $16
	JLT          qktail

qkgroup:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3
	VPXORD Z4, Z4, Z4
	VPXORD Z5, Z5, Z5
	VPXORD Z6, Z6, Z6
	VPXORD Z7, Z7, Z7
	VPXORD Z8, Z8, Z8
	VPXORD Z9, Z9, Z9
	VPXORD Z10, Z10, Z10
	VPXORD Z11, Z11, Z11
	VPXORD Z12, Z12, Z12
	VPXORD Z13, Z13, Z13
	VPXORD Z14, Z14, Z14
	VPXORD Z15, Z15, Z15
	MOVQ   DI, AX
	LEAQ   (DI)(R10*4), BX
	LEAQ   (BX)(R10*4), R12
	LEAQ   (R12)(R10*4), R13
	MOVQ   SI, R14
	MOVQ   R8, CX

qkchunk:
	VMOVUPS (R14), Z16
	QKFMA16
	ADDQ    $64, R14
	ADDQ    $64, AX
	ADDQ    $64, BX
	ADDQ    $64, R12
	ADDQ    $64, R13
	DECQ    CX
	JNZ     qkchunk

	PAIR8(Z0, Z1, Z0)
	PAIR8(Z2, Z3, Z1)
	PAIR8(Z4, Z5, Z2)
	PAIR8(Z6, Z7, Z3)
	PAIR8(Z8, Z9, Z4)
	PAIR8(Z10, Z11, Z5)
	PAIR8(Z12, Z13, Z6)
	PAIR8(Z14, Z15, Z7)
	PAIR4(Z0, Z1, Z0)
	PAIR4(Z2, Z3, Z1)
	PAIR4(Z4, Z5, Z2)
	PAIR4(Z6, Z7, Z3)
	PAIR2(Z0, Z1, Z0)
	PAIR2(Z2, Z3, Z1)
	PAIR1(Z0, Z1, Z0)
	VMULPS   Z18, Z0, Z0
	VMOVUPS  Z0, (DX)
	VMAXPS   Z0, Z17, Z17
	VCMPPS   $3, Z0, Z0, K1
	KORW     K1, K2, K2
	ADDQ     $64, DX
	LEAQ     (DI)(R10*8), DI
	LEAQ     (DI)(R10*8), DI // 16 keys on
	SUBQ     $16, R9
	CMPQ     R9, $16
	JGE      qkgroup

qktail:
	TESTQ R9, R9
	JZ    qkdone

qkone:
	VPXORD Z0, Z0, Z0
	MOVQ   DI, AX
	MOVQ   SI, R14
	MOVQ   R8, CX

qkonechunk:
	VMOVUPS     (R14), Z16
	VFMADD231PS (AX), Z16, Z0
	ADDQ        $64, R14
	ADDQ        $64, AX
	DECQ        CX
	JNZ         qkonechunk

	REDUCE16(Z0, Y0, X0, (DX))
	VMULSS       (DX), X18, X0
	VMOVSS       X0, (DX)
	VBROADCASTSS X0, Z0
	VMAXPS       Z0, Z17, Z17
	VCMPPS       $3, Z0, Z0, K1
	KORW         K1, K2, K2
	ADDQ         $4, DX
	ADDQ         R10, DI
	DECQ         R9
	JNZ          qkone

qkdone:
	VEXTRACTF32X8 $1, Z17, Y0
	VMAXPS        Y0, Y17, Y0
	VEXTRACTF128  $1, Y0, X1
	VMAXPS        X1, X0, X0
	VMOVHLPS      X0, X0, X1
	VMAXPS        X1, X0, X0
	VMOVSHDUP     X0, X1
	VMAXSS        X1, X0, X0
	VMOVSS        X0, m+56(FP)
	KORTESTW      K2, K2
	SETEQ         ordered+60(FP)
	VZEROUPPER
	RET

// func f32ToHalfF16C(dst *byte, src *float32, n8 int) (finite bool)
// Converts 8*n8 float32 to little-endian f16 words (round to nearest even,
// exact for the KV's f16 values) and reports whether every word is finite
// (the caller redoes the conversion, saturating, when one is not).
TEXT ·f32ToHalfF16C(SB), NOSPLIT, $0-25
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n8+16(FP), CX
	MOVL         $0x7c00, AX
	VMOVD        AX, X15
	VPBROADCASTW X15, X15
	VPXOR        X14, X14, X14
	TESTQ        CX, CX
	JZ           th8done

th8loop:
	VMOVUPS   (SI), Y0
	VCVTPS2PH $0, Y0, X1
	VMOVDQU   X1, (DI)
	VPAND     X15, X1, X2
	VPCMPEQW  X15, X2, X2
	VPOR      X2, X14, X14
	ADDQ      $32, SI
	ADDQ      $16, DI
	DECQ      CX
	JNZ       th8loop

th8done:
	VPTEST  X14, X14
	SETEQ   finite+24(FP)
	VZEROUPPER
	RET

// func pv1SumAVX512(p *float32, nk int, v *float32, vs int, out *float32, hd64 int) (sum float64)
// pv1AVX512 that also returns the float64 sum of p[0:nk] in increasing j
// (attention's softmax denominator): one scalar add chain per key, beside
// the four multiply-add chains that bound the loop anyway.
TEXT ·pv1SumAVX512(SB), NOSPLIT, $0-56
	MOVQ p+0(FP), SI
	MOVQ nk+8(FP), R9
	MOVQ v+16(FP), DI
	MOVQ vs+24(FP), R10
	SHLQ $2, R10
	MOVQ out+32(FP), DX
	MOVQ hd64+40(FP), R12

pvschunk:
	VMOVUPS (DX), Z0
	VMOVUPS 64(DX), Z1
	VMOVUPS 128(DX), Z2
	VMOVUPS 192(DX), Z3
	VXORPD  X5, X5, X5 // the sum, recomputed by every chunk
	MOVQ   SI, AX
	MOVQ   DI, BX
	MOVQ   R9, CX
	TESTQ  CX, CX
	JZ     pvsstore

pvsloop:
	VBROADCASTSS (AX), Z20
	VCVTSS2SD    (AX), X6, X6
	VADDSD       X6, X5, X5
	VFMADD231PS  (BX), Z20, Z0
	VFMADD231PS  64(BX), Z20, Z1
	VFMADD231PS  128(BX), Z20, Z2
	VFMADD231PS  192(BX), Z20, Z3
	ADDQ         $4, AX
	ADDQ         R10, BX
	DECQ         CX
	JNZ          pvsloop

pvsstore:
	VMOVUPS Z0, (DX)
	VMOVUPS Z1, 64(DX)
	VMOVUPS Z2, 128(DX)
	VMOVUPS Z3, 192(DX)
	ADDQ    $256, DI
	ADDQ    $256, DX
	DECQ    R12
	JNZ     pvschunk
	VMOVSD  X5, sum+48(FP)
	VZEROUPPER
	RET
