package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/kvcache/kvcache/internal/half"
)

// decode converts raw tensor bytes of type t into float32 values. len(raw)
// must be exactly the encoded size of len(dst) elements.
func decode(t TensorType, raw []byte, dst []float32) error {
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case F16:
		half.DecodeLE(dst, raw)
	case BF16:
		for i := range dst {
			dst[i] = half.BF16ToFloat32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case Q8_0:
		// Block of 32: f16 scale d, then 32 int8 quants; x = q*d.
		for b := 0; b < len(dst)/32; b++ {
			blk := raw[b*34 : b*34+34]
			d := half.ToFloat32(binary.LittleEndian.Uint16(blk))
			out := dst[b*32 : b*32+32]
			for j := range out {
				out[j] = float32(int8(blk[2+j])) * d
			}
		}
	case Q4_0:
		// Block of 32: f16 scale d, then 16 bytes; element j<16 is the low
		// nibble of byte j, element j+16 the high nibble; x = (q-8)*d.
		for b := 0; b < len(dst)/32; b++ {
			blk := raw[b*18 : b*18+18]
			d := half.ToFloat32(binary.LittleEndian.Uint16(blk))
			out := dst[b*32 : b*32+32]
			for j := 0; j < 16; j++ {
				out[j] = float32(int(blk[2+j]&0x0f)-8) * d
				out[j+16] = float32(int(blk[2+j]>>4)-8) * d
			}
		}
	case Q4_K:
		for b := 0; b < len(dst)/256; b++ {
			decodeQ4K(raw[b*144:b*144+144], dst[b*256:b*256+256])
		}
	case Q6_K:
		for b := 0; b < len(dst)/256; b++ {
			decodeQ6K(raw[b*210:b*210+210], dst[b*256:b*256+256])
		}
	default:
		return fmt.Errorf("%w: tensor type %v", ErrUnsupported, t)
	}
	return nil
}

// decodeQ4K decodes one Q4_K super-block: f16 d, f16 dmin, 12 bytes of
// packed 6-bit (scale, min) pairs for eight 32-element sub-blocks, then 128
// bytes of nibbles. Each 64-element group uses 32 bytes: low nibbles are
// the first sub-block, high nibbles the second; x = d*scale*q - dmin*min.
func decodeQ4K(blk []byte, out []float32) {
	d := half.ToFloat32(binary.LittleEndian.Uint16(blk))
	dmin := half.ToFloat32(binary.LittleEndian.Uint16(blk[2:]))
	sc := blk[4:16]
	qs := blk[16:144]
	scaleMin := func(j int) (float32, float32) {
		if j < 4 {
			return float32(sc[j] & 63), float32(sc[j+4] & 63)
		}
		return float32(sc[j+4]&0x0f | (sc[j-4]>>6)<<4), float32(sc[j+4]>>4 | (sc[j]>>6)<<4)
	}
	for g := 0; g < 4; g++ {
		s1, m1 := scaleMin(2 * g)
		s2, m2 := scaleMin(2*g + 1)
		d1, d2, o1, o2 := d*s1, d*s2, dmin*m1, dmin*m2
		q := qs[32*g : 32*g+32]
		y := out[64*g : 64*g+64]
		for l := 0; l < 32; l++ {
			y[l] = d1*float32(q[l]&0x0f) - o1
			y[l+32] = d2*float32(q[l]>>4) - o2
		}
	}
}

// decodeQ6K decodes one Q6_K super-block: 128 bytes of low nibbles (ql),
// 64 bytes of high 2-bit pairs (qh), 16 int8 scales (one per 16 elements)
// and f16 d. Each 128-element half uses 64 ql, 32 qh and 8 scales;
// x = d*scale*(q-32).
func decodeQ6K(blk []byte, out []float32) {
	d := half.ToFloat32(binary.LittleEndian.Uint16(blk[208:]))
	for h := 0; h < 2; h++ {
		ql := blk[64*h : 64*h+64]
		qh := blk[128+32*h : 128+32*h+32]
		sc := blk[192+8*h : 192+8*h+8]
		y := out[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int(ql[l]&0x0f|(qh[l]>>0&3)<<4) - 32
			q2 := int(ql[l+32]&0x0f|(qh[l]>>2&3)<<4) - 32
			q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			y[l] = d * float32(int8(sc[is])) * float32(q1)
			y[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			y[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			y[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

// encode converts float32 values to the byte encoding of type t.
func encode(t TensorType, src []float32) ([]byte, error) {
	elems, bytesPer, ok := t.blockLayout()
	if !ok || t == Q4_K || t == Q6_K {
		return nil, fmt.Errorf("%w: tensor type %v", ErrUnsupported, t)
	}
	if int64(len(src))%elems != 0 {
		return nil, fmt.Errorf("%w: %d elements is not a multiple of the %v block size %d", ErrInvalid, len(src), t, elems)
	}
	out := make([]byte, int64(len(src))/elems*bytesPer)
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], half.FromFloat32(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], half.BF16FromFloat32(v))
		}
	case Q8_0:
		for b := 0; b < len(src)/32; b++ {
			in := src[b*32 : b*32+32]
			var amax float32
			for _, v := range in {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			d := amax / 127
			var id float32
			if d != 0 {
				id = 1 / d
			}
			blk := out[b*34 : b*34+34]
			binary.LittleEndian.PutUint16(blk, half.FromFloat32(d))
			for j, v := range in {
				blk[2+j] = byte(int8(math.Round(float64(v * id))))
			}
		}
	case Q4_0:
		for b := 0; b < len(src)/32; b++ {
			in := src[b*32 : b*32+32]
			var amax, mx float32
			for _, v := range in {
				if a := float32(math.Abs(float64(v))); a > amax {
					amax, mx = a, v
				}
			}
			d := mx / -8
			var id float32
			if d != 0 {
				id = 1 / d
			}
			blk := out[b*18 : b*18+18]
			binary.LittleEndian.PutUint16(blk, half.FromFloat32(d))
			q := func(v float32) byte { return byte(min(15, max(0, int(v*id+8.5)))) }
			for j := 0; j < 16; j++ {
				blk[2+j] = q(in[j]) | q(in[j+16])<<4
			}
		}
	}
	return out, nil
}

// Dequantize decodes raw bytes of tensor type t into dst, whose length is
// the number of elements. It fails for types this package cannot decode and
// when len(raw) is not the encoded size of len(dst) elements.
func Dequantize(t TensorType, raw []byte, dst []float32) error {
	elems, size, ok := t.blockLayout()
	if !ok {
		return fmt.Errorf("%w: tensor type %v", ErrUnsupported, t)
	}
	if int64(len(dst))%elems != 0 || int64(len(raw)) != int64(len(dst))/elems*size {
		return fmt.Errorf("%w: %d bytes of %v for %d elements", ErrTruncated, len(raw), t, len(dst))
	}
	return decode(t, raw, dst)
}

// Quantize encodes float32 values as tensor type t (F32, F16, BF16, Q8_0 or
// Q4_0; len(src) a multiple of the type's block size).
func Quantize(t TensorType, src []float32) ([]byte, error) { return encode(t, src) }
