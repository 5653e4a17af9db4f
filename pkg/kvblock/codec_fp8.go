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
				cr = cr[:len(row)]
				for i, v := range row {
					cr[i] = e4m3(v * inv)
				}
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
