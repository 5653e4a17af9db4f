package kvblock

import (
	"encoding/binary"
	"math"

	"github.com/kvcache/kvcache/internal/half"
)

// Raw 16-bit codecs: one little-endian 16-bit word per element, K then V,
// in element order. Lossless for inputs already rounded to that precision.
//
// The loops take four values per iteration: when all four are in the
// common range (normal f16 magnitudes for f16, finite non-overflowing for
// bf16) the conversion is a few integer ops and one 64-bit store; otherwise
// the four go through the general saturating conversion.

func encodeF16(dst []byte, src []float32) {
	u := float32Bits(src)
	dst = dst[:2*len(u)]
	i := 0
	for ; i+4 <= len(u); i += 4 {
		v := u[i : i+4 : i+4]
		d := dst[2*i : 2*i+8 : 2*i+8]
		b0, b1, b2, b3 := v[0], v[1], v[2], v[3]
		if !f16Normal4(b0, b1, b2, b3) {
			binary.LittleEndian.PutUint16(d[0:], half.FromFloat32Sat(math.Float32frombits(b0)))
			binary.LittleEndian.PutUint16(d[2:], half.FromFloat32Sat(math.Float32frombits(b1)))
			binary.LittleEndian.PutUint16(d[4:], half.FromFloat32Sat(math.Float32frombits(b2)))
			binary.LittleEndian.PutUint16(d[6:], half.FromFloat32Sat(math.Float32frombits(b3)))
			continue
		}
		binary.LittleEndian.PutUint64(d, f16Norm(b0)|f16Norm(b1)<<16|f16Norm(b2)<<32|f16Norm(b3)<<48)
	}
	for ; i < len(u); i++ {
		binary.LittleEndian.PutUint16(dst[2*i:], half.FromFloat32Sat(src[i]))
	}
}

func decodeF16(dst []float32, src []byte) {
	n := vdec.f16s(dst, src)
	half.DecodeLE(dst[n:], src[2*n:])
}

func encodeBF16(dst []byte, src []float32) {
	u := float32Bits(src)
	dst = dst[:2*len(u)]
	i := 0
	for ; i+4 <= len(u); i += 4 {
		v := u[i : i+4 : i+4]
		d := dst[2*i : 2*i+8 : 2*i+8]
		b0, b1, b2, b3 := v[0], v[1], v[2], v[3]
		if max(b0&0x7fffffff, b1&0x7fffffff, b2&0x7fffffff, b3&0x7fffffff) >= 0x7f7f8000 {
			binary.LittleEndian.PutUint16(d[0:], half.BF16FromFloat32Sat(math.Float32frombits(b0)))
			binary.LittleEndian.PutUint16(d[2:], half.BF16FromFloat32Sat(math.Float32frombits(b1)))
			binary.LittleEndian.PutUint16(d[4:], half.BF16FromFloat32Sat(math.Float32frombits(b2)))
			binary.LittleEndian.PutUint16(d[6:], half.BF16FromFloat32Sat(math.Float32frombits(b3)))
			continue
		}
		binary.LittleEndian.PutUint64(d, bf16Round(b0)|bf16Round(b1)<<16|bf16Round(b2)<<32|bf16Round(b3)<<48)
	}
	for ; i < len(u); i++ {
		binary.LittleEndian.PutUint16(dst[2*i:], half.BF16FromFloat32Sat(src[i]))
	}
}

func decodeBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	y := float32Bits(dst)
	i := 0
	for ; i+4 <= len(y); i += 4 {
		w := binary.LittleEndian.Uint64(src[2*i:])
		o := y[i : i+4 : i+4]
		o[0] = uint32(w) << 16
		o[1] = uint32(w>>16) << 16
		o[2] = uint32(w>>32) << 16
		o[3] = uint32(w>>48) << 16
	}
	for ; i < len(y); i++ {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}
