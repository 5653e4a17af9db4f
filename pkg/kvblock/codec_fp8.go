package kvblock

import (
	"encoding/binary"
	"math"
)

// fp8_e4m3: one float32 scale per (layer, head), over all the block's
// tokens. Params: Layers*KVHeads float32 (little-endian) in (layer, head)
// order. Codes: one E4M3 byte per element. Decode: x = e4m3(code) * scale.
// The scale is amax/448 so the largest magnitude lands on the top code;
// fp32 rather than fp16 because it is only 4 bytes per (layer, head) and
// saves reasoning about scale rounding. Sink rows are excluded from amax.

func encodeFP8(L *layout, x []float32, params, codes []byte) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	var buf [MaxHeadDim]float32
	for l := 0; l < L.s.Layers; l++ {
		for h := 0; h < H; h++ {
			var m uint32
			for t := L.nSink; t < T; t++ {
				o := ((l*T+t)*H + h) * D
				m = max(m, absmaxBits(x[o:o+D]))
			}
			dirty := m > f16MaxBits
			if dirty {
				// Rare: recompute amax over the clamped values.
				m = 0
				for t := L.nSink; t < T; t++ {
					o := ((l*T+t)*H + h) * D
					m = max(m, absmaxBits(sanitizeRow(buf[:D], x[o:o+D])))
				}
			}
			amax := math.Float32frombits(m)
			scale := amax / 448
			var inv float32
			if amax > 0 {
				inv = 448 / amax
			}
			binary.LittleEndian.PutUint32(params[4*(l*H+h):], math.Float32bits(scale))
			for t := 0; t < T; t++ {
				o := ((l*T+t)*H + h) * D
				cr := codes[o : o+D]
				if t < L.nSink {
					clear(cr)
					continue
				}
				row := x[o : o+D]
				if dirty {
					row = sanitizeRow(buf[:D], row)
				}
				quantFP8(cr, row, inv)
			}
		}
	}
}

func decodeFP8(L *layout, params, codes []byte, y []float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	tab := &e4m3Table
	for l := 0; l < L.s.Layers; l++ {
		for h := 0; h < H; h++ {
			s := math.Float32frombits(binary.LittleEndian.Uint32(params[4*(l*H+h):]))
			for t := 0; t < T; t++ {
				o := ((l*T+t)*H + h) * D
				cr := codes[o : o+D]
				out := y[o : o+D]
				out = out[:len(cr)]
				for i, c := range cr {
					out[i] = tab[c] * s
				}
			}
		}
	}
}

// quantFP8 is cr[i] = e4m3(row[i]*inv), four values at a time: when all
// four scaled magnitudes are in the normal E4M3 range [2^-6, 448) the
// conversion is a rebias and one rounding add (e4m3Norm); otherwise the four
// take the general e4m3.
func quantFP8(cr []byte, row []float32, inv float32) {
	cr = cr[:len(row)]
	i := 0
	for ; i+4 <= len(row); i += 4 {
		x := row[i : i+4 : i+4]
		d := cr[i : i+4 : i+4]
		b0 := math.Float32bits(x[0] * inv)
		b1 := math.Float32bits(x[1] * inv)
		b2 := math.Float32bits(x[2] * inv)
		b3 := math.Float32bits(x[3] * inv)
		const lo, span = 0x3c800000, 0x43e00000 - 0x3c800000
		if max(b0&0x7fffffff-lo, b1&0x7fffffff-lo, b2&0x7fffffff-lo, b3&0x7fffffff-lo) >= span {
			d[0] = e4m3(math.Float32frombits(b0))
			d[1] = e4m3(math.Float32frombits(b1))
			d[2] = e4m3(math.Float32frombits(b2))
			d[3] = e4m3(math.Float32frombits(b3))
			continue
		}
		binary.LittleEndian.PutUint32(d, e4m3Norm(b0)|e4m3Norm(b1)<<8|e4m3Norm(b2)<<16|e4m3Norm(b3)<<24)
	}
	for ; i < len(row); i++ {
		cr[i] = e4m3(row[i] * inv)
	}
}

// e4m3Norm is e4m3 for float32 bits b with magnitude in [2^-6, 448).
func e4m3Norm(b uint32) uint32 {
	a := b&0x7fffffff - 120<<23 // rebias 127 -> 7
	a += 0x7ffff + (a>>20)&1
	return min(a>>20, 0x7e) | (b>>24)&0x80
}
