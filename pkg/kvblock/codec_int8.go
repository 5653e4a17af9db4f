package kvblock

import (
	"encoding/binary"
	"math"

	"github.com/kvcache/kvcache/internal/half"
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
	D, H := L.s.HeadDim, L.s.KVHeads
	var buf [MaxHeadDim]float32
	// Rows are processed in batches: first every row's absmax and scale,
	// then every row's codes. The scale is a long dependency chain (absmax,
	// divide, round to f16, reciprocal); batching lets the chains of
	// several rows overlap instead of stalling each row's quantize loop.
	const batch = 8
	var inv [batch]float32
	var dirty [batch]bool
	r := 0
	for l := 0; l < L.s.Layers; l++ {
		for t := 0; t < L.s.Tokens; t++ {
			if t < L.nSink {
				clear(codes[r*D : (r+H)*D])
				clear(params[2*r : 2*(r+H)])
				r += H
				continue
			}
			for h0 := 0; h0 < H; h0 += batch {
				nb := min(batch, H-h0)
				for i := 0; i < nb; i++ {
					row := x[(r+i)*D : (r+i)*D+D]
					m := absmaxBits(row)
					dirty[i] = m > f16MaxBits
					if dirty[i] {
						m = absmaxBits(sanitizeRow(buf[:D], row))
					}
					s16 := ceilF16Fast(math.Float32frombits(m) / 127)
					inv[i] = 0
					if s := half.ToFloat32(s16); s > 0 {
						inv[i] = 1 / s
					}
					binary.LittleEndian.PutUint16(params[2*(r+i):], s16)
				}
				for i := 0; i < nb; i++ {
					row := x[(r+i)*D : (r+i)*D+D]
					if dirty[i] {
						row = sanitizeRow(buf[:D], row)
					}
					quantInt8(codes[(r+i)*D:(r+i)*D+D], row, inv[i])
				}
				r += nb
			}
		}
	}
}

func quantInt8(dst []byte, src []float32, inv float32) {
	if useSIMD && len(src)%16 == 0 {
		simdQuantInt8(dst, src, inv)
		return
	}
	dst = dst[:len(src)]
	i := 0
	for ; i+8 <= len(src); i += 8 {
		s := src[i : i+8 : i+8]
		d := dst[i : i+8 : i+8]
		d[0] = byte(math.Float32bits(s[0]*inv + roundMagic))
		d[1] = byte(math.Float32bits(s[1]*inv + roundMagic))
		d[2] = byte(math.Float32bits(s[2]*inv + roundMagic))
		d[3] = byte(math.Float32bits(s[3]*inv + roundMagic))
		d[4] = byte(math.Float32bits(s[4]*inv + roundMagic))
		d[5] = byte(math.Float32bits(s[5]*inv + roundMagic))
		d[6] = byte(math.Float32bits(s[6]*inv + roundMagic))
		d[7] = byte(math.Float32bits(s[7]*inv + roundMagic))
	}
	for ; i < len(src); i++ {
		dst[i] = byte(math.Float32bits(src[i]*inv + roundMagic))
	}
}

// int8Floats maps a code byte to float32(int8(code)); a load is cheaper
// than the sign extension and int->float conversion.
var int8Floats = func() (t [256]float32) {
	for c := range t {
		t[c] = float32(int8(c))
	}
	return t
}()

func decodeInt8(L *layout, params, codes []byte, y []float32) {
	D := L.s.HeadDim
	rows := L.s.Layers * L.s.Tokens * L.s.KVHeads
	params = params[:2*rows]
	codes = codes[:rows*D]
	y = y[:rows*D]
	if vdec.rows8(y, codes, params, D) {
		return
	}
	tab := &int8Floats
	for r := 0; r < rows; r++ {
		s := half.ToFloat32(binary.LittleEndian.Uint16(params[2*r:]))
		cr := codes[r*D : r*D+D]
		out := y[r*D : r*D+D]
		out = out[:len(cr)]
		i := 0
		for ; i+8 <= len(cr); i += 8 {
			w := binary.LittleEndian.Uint64(cr[i:])
			o := out[i : i+8 : i+8]
			o[0] = tab[uint8(w)] * s
			o[1] = tab[uint8(w>>8)] * s
			o[2] = tab[uint8(w>>16)] * s
			o[3] = tab[uint8(w>>24)] * s
			o[4] = tab[uint8(w>>32)] * s
			o[5] = tab[uint8(w>>40)] * s
			o[6] = tab[uint8(w>>48)] * s
			o[7] = tab[uint8(w>>56)] * s
		}
		for ; i < len(cr); i++ {
			out[i] = tab[cr[i]] * s
		}
	}
}
