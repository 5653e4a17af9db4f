//go:build amd64 && !purego

#include "textflag.h"

// Vector decode loops for the int4 (KIVI) and int8 codecs; decode_amd64.go
// chooses them at run time and decode.go documents the contract. Every
// output is computed as the portable loop computes it: float32(code) times
// the scale, rounded, then plus the zero, rounded (two instructions, never
// a fused multiply-add), with the product as the first source operand of
// the add: when both the product and the zero are NaN the product's NaN is
// returned, as the portable code's ADDSS does in a normal build (see
// decode.go: that choice is not part of the contract).
//
// The callers have checked every length: the pointers cover all that the
// loop counts say is read and written.

// NIB16 expands the 8 code bytes at (SI) into 16 int32 lanes of Z (X is
// its low half), element 2i from the low nibble of byte i. X15 holds
// 0x0f in every byte. Clobbers X14.
#define NIB16(Z, X) \
	VMOVQ      (SI), X \
	VPSRLW     $4, X, X14 \
	VPUNPCKLBW X14, X, X \
	VPAND      X15, X, X \
	VPMOVZXBD  X, Z

// NIB8 is NIB16 for 4 code bytes into 8 int32 lanes of Y.
#define NIB8(Y, X) \
	VMOVD      (SI), X \
	VPSRLW     $4, X, X14 \
	VPUNPCKLBW X14, X, X \
	VPAND      X15, X, X \
	VPMOVZXBD  X, Y

#define NIBMASK \
	MOVL         $0x0f0f0f0f, AX \
	VMOVD        AX, X15 \
	VPBROADCASTD X15, X15

// func int4ChannelsAVX512(y *float32, codes *byte, sf, zf *float32, w16, rows int)
// Rows of w16*16 channels, each with its own scale sf[d] and zero zf[d]:
// y[r*W+d] = float32(code(r, d))*sf[d] + zf[d], the codes of a row being
// w16*8 contiguous bytes.
TEXT ·int4ChannelsAVX512(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ sf+16(FP), R8
	MOVQ zf+24(FP), R9
	MOVQ w16+32(FP), R10
	MOVQ rows+40(FP), R11
	TESTQ R10, R10
	JZ    c4done
	TESTQ R11, R11
	JZ    c4done
	NIBMASK

c4row:
	MOVQ R10, CX
	XORQ DX, DX

c4loop:
	NIB16(Z0, X0)
	VCVTDQ2PS Z0, Z0
	VMULPS    (R8)(DX*1), Z0, Z0
	VADDPS    (R9)(DX*1), Z0, Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $8, SI
	ADDQ      $64, DI
	ADDQ      $64, DX
	DECQ      CX
	JNZ       c4loop

	DECQ R11
	JNZ  c4row

c4done:
	VZEROUPPER
	RET

// func int4ChannelsAVX2(y *float32, codes *byte, sf, zf *float32, w8, rows int)
// int4ChannelsAVX512 with 8 lanes: rows of w8*8 channels.
TEXT ·int4ChannelsAVX2(SB), NOSPLIT, $0-48
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ sf+16(FP), R8
	MOVQ zf+24(FP), R9
	MOVQ w8+32(FP), R10
	MOVQ rows+40(FP), R11
	TESTQ R10, R10
	JZ    c4done2
	TESTQ R11, R11
	JZ    c4done2
	NIBMASK

c4row2:
	MOVQ R10, CX
	XORQ DX, DX

c4loop2:
	NIB8(Y0, X0)
	VCVTDQ2PS Y0, Y0
	VMULPS    (R8)(DX*1), Y0, Y0
	VADDPS    (R9)(DX*1), Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $4, SI
	ADDQ      $32, DI
	ADDQ      $32, DX
	DECQ      CX
	JNZ       c4loop2

	DECQ R11
	JNZ  c4row2

c4done2:
	VZEROUPPER
	RET

// func int4GroupsAVX512(y *float32, codes *byte, params *byte, groups, g16 int)
// Consecutive groups of g16*16 channels, group i with the f16 (scale, zero)
// pair at params[4i:]: y = float32(code)*scale + zero.
TEXT ·int4GroupsAVX512(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ params+16(FP), R8
	MOVQ groups+24(FP), R11
	MOVQ g16+32(FP), R10
	TESTQ R10, R10
	JZ    g4done
	TESTQ R11, R11
	JZ    g4done
	NIBMASK

g4group:
	VMOVD        (R8), X3
	VCVTPH2PS    X3, X3
	VBROADCASTSS X3, Z4
	VMOVSHDUP    X3, X3
	VBROADCASTSS X3, Z5
	MOVQ         R10, CX

g4loop:
	NIB16(Z0, X0)
	VCVTDQ2PS Z0, Z0
	VMULPS    Z4, Z0, Z0
	VADDPS    Z5, Z0, Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $8, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       g4loop

	ADDQ $4, R8
	DECQ R11
	JNZ  g4group

g4done:
	VZEROUPPER
	RET

// func int4GroupsAVX2(y *float32, codes *byte, params *byte, groups, g8 int)
// int4GroupsAVX512 with 8 lanes: groups of g8*8 channels.
TEXT ·int4GroupsAVX2(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ params+16(FP), R8
	MOVQ groups+24(FP), R11
	MOVQ g8+32(FP), R10
	TESTQ R10, R10
	JZ    g4done2
	TESTQ R11, R11
	JZ    g4done2
	NIBMASK

g4group2:
	VMOVD        (R8), X3
	VCVTPH2PS    X3, X3
	VBROADCASTSS X3, Y4
	VMOVSHDUP    X3, X3
	VBROADCASTSS X3, Y5
	MOVQ         R10, CX

g4loop2:
	NIB8(Y0, X0)
	VCVTDQ2PS Y0, Y0
	VMULPS    Y4, Y0, Y0
	VADDPS    Y5, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $4, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       g4loop2

	ADDQ $4, R8
	DECQ R11
	JNZ  g4group2

g4done2:
	VZEROUPPER
	RET

// func int8RowsAVX512(y *float32, codes *byte, params *byte, rows, d16 int)
// Rows of d16*16 int8 codes, row i with the f16 scale at params[2i:]:
// y = float32(int8(code))*scale.
TEXT ·int8RowsAVX512(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ params+16(FP), R8
	MOVQ rows+24(FP), R11
	MOVQ d16+32(FP), R10
	TESTQ R10, R10
	JZ    r8done
	TESTQ R11, R11
	JZ    r8done

r8row:
	MOVWLZX      (R8), AX
	VMOVD        AX, X3
	VCVTPH2PS    X3, X3
	VBROADCASTSS X3, Z4
	MOVQ         R10, CX

r8loop:
	VPMOVSXBD (SI), Z0
	VCVTDQ2PS Z0, Z0
	VMULPS    Z4, Z0, Z0
	VMOVUPS   Z0, (DI)
	ADDQ      $16, SI
	ADDQ      $64, DI
	DECQ      CX
	JNZ       r8loop

	ADDQ $2, R8
	DECQ R11
	JNZ  r8row

r8done:
	VZEROUPPER
	RET

// func int8RowsAVX2(y *float32, codes *byte, params *byte, rows, d8 int)
// int8RowsAVX512 with 8 lanes: rows of d8*8 codes.
TEXT ·int8RowsAVX2(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ codes+8(FP), SI
	MOVQ params+16(FP), R8
	MOVQ rows+24(FP), R11
	MOVQ d8+32(FP), R10
	TESTQ R10, R10
	JZ    r8done2
	TESTQ R11, R11
	JZ    r8done2

r8row2:
	MOVWLZX      (R8), AX
	VMOVD        AX, X3
	VCVTPH2PS    X3, X3
	VBROADCASTSS X3, Y4
	MOVQ         R10, CX

r8loop2:
	VPMOVSXBD (SI), Y0
	VCVTDQ2PS Y0, Y0
	VMULPS    Y4, Y0, Y0
	VMOVUPS   Y0, (DI)
	ADDQ      $8, SI
	ADDQ      $32, DI
	DECQ      CX
	JNZ       r8loop2

	ADDQ $2, R8
	DECQ R11
	JNZ  r8row2

r8done2:
	VZEROUPPER
	RET

// func f16PairsAVX512(sf, zf *float32, params *byte, n16 int)
// De-interleaves n16*16 f16 (scale, zero) pairs into float32 scales and
// zeros.
TEXT ·f16PairsAVX512(SB), NOSPLIT, $0-32
	MOVQ sf+0(FP), DI
	MOVQ zf+8(FP), DX
	MOVQ params+16(FP), SI
	MOVQ n16+24(FP), CX
	TESTQ CX, CX
	JZ    p16done

p16loop:
	VMOVDQU32 (SI), Z0
	VPMOVDW   Z0, Y1
	VPSRLD    $16, Z0, Z2
	VPMOVDW   Z2, Y2
	VCVTPH2PS Y1, Z1
	VCVTPH2PS Y2, Z2
	VMOVUPS   Z1, (DI)
	VMOVUPS   Z2, (DX)
	ADDQ      $64, SI
	ADDQ      $64, DI
	ADDQ      $64, DX
	DECQ      CX
	JNZ       p16loop

p16done:
	VZEROUPPER
	RET

// func f16ToF32AVX512(dst *float32, src *byte, n16 int)
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

// func f16ToF32F16C(dst *float32, src *byte, n8 int)
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
