package kvblock

import (
	"encoding/binary"
	"math"
)

// int8: symmetric, one f16 scale per (layer, token, head) row.
// Params: rows f16 scales in row order. Codes: one int8 per element.
// Decode: x = float32(code) * scale.
//
// The scale is absmax/127 rounded *up* to f16, so |x/scale| <= 127 and no
// code ever clips; the error bound is scale/2 with scale within 2^-10
// (relative) of absmax/127.

// roundMagic is 1.5*2^23: adding it to |q| < 2^22 leaves round-to-nearest-
// even(q) in the low mantissa bits as a two's-complement integer, one FP add
// instead of a call to math.RoundToEven.
const roundMagic = 12582912

func encodeInt8(L *layout, x []float32, params, codes []byte) {
	D := L.s.HeadDim
	var buf [MaxHeadDim]float32
	r := 0
	for l := 0; l < L.s.Layers; l++ {
		for t := 0; t < L.s.Tokens; t++ {
			for h := 0; h < L.s.KVHeads; h++ {
				row := x[r*D : r*D+D]
				cr := codes[r*D : r*D+D]
				var s16 uint16
				if t < L.nSink {
					clear(cr)
				} else {
					m := absmaxBits(row)
					if m > f16MaxBits {
						row = sanitizeRow(buf[:D], row)
						m = absmaxBits(row)
					}
					s16 = ceilF16(math.Float32frombits(m) / 127)
					var inv float32
					if s := f16Table[s16]; s > 0 {
						inv = 1 / s
					}
					quantInt8(cr, row, inv)
				}
				binary.LittleEndian.PutUint16(params[2*r:], s16)
				r++
			}
		}
	}
}

func quantInt8(dst []byte, src []float32, inv float32) {
	dst = dst[:len(src)]
	i := 0
	for ; i+4 <= len(src); i += 4 {
		s := src[i : i+4 : i+4]
		d := dst[i : i+4 : i+4]
		d[0] = byte(math.Float32bits(s[0]*inv + roundMagic))
		d[1] = byte(math.Float32bits(s[1]*inv + roundMagic))
		d[2] = byte(math.Float32bits(s[2]*inv + roundMagic))
		d[3] = byte(math.Float32bits(s[3]*inv + roundMagic))
	}
	for ; i < len(src); i++ {
		dst[i] = byte(math.Float32bits(src[i]*inv + roundMagic))
	}
}

func decodeInt8(L *layout, params, codes []byte, y []float32) {
	D := L.s.HeadDim
	rows := L.s.Layers * L.s.Tokens * L.s.KVHeads
	params = params[:2*rows]
	codes = codes[:rows*D]
	y = y[:rows*D]
	for r := 0; r < rows; r++ {
		s := f16Table[binary.LittleEndian.Uint16(params[2*r:])]
		cr := codes[r*D : r*D+D]
		out := y[r*D : r*D+D]
		out = out[:len(cr)]
		for i, c := range cr {
			out[i] = float32(int8(c)) * s
		}
	}
}
