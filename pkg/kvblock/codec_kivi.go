package kvblock

import (
	"encoding/binary"
	"math"
)

// KIVI int4/int2 (Liu et al., 2024): keys have a few outlier *channels*, so
// they are quantized per channel over a group of KGroup tokens; values have
// no channel structure and are quantized per token over groups of VGroup
// contiguous channels of one head. Both asymmetric: x = code*scale + zero,
// codes in [0, 2^b-1], scale and zero f16.
//
// The zero is the group minimum rounded *down* to f16 and the scale
// (max-zero)/(2^b-1) rounded *up*, so [zero, zero+qmax*scale] always covers
// the group: no code clips and the error is at most scale/2.
//
// Params, per tensor, are (scale f16, zero f16) pairs:
//   K: (layer, key group, head, channel) order, ceil(Tokens/KGroup) groups;
//   V: (layer, token, head, value group) order, ceil(HeadDim/VGroup) groups.
// The last group of either kind may be shorter. Codes are packed per
// (layer, token, head) row, little end first (element d in bits
// (d%k)*b of byte d/k, k = 8/b); each row starts on a byte boundary, so when
// HeadDim*b is not a multiple of 8 the row's last byte has zero padding bits.
//
// Sink rows are excluded from the key groups' min/max (their outliers would
// otherwise widen the range for every token of the group); their codes and,
// for values, their params are written as zero and Decode overwrites them.

// codeFloats converts small codes to float32 by lookup, cheaper than a
// conversion in the inner loops.
var codeFloats = [16]float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

func encodeKIVIKeys(L *layout, x []float32, params, codes []byte) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	qmax := float32(int(1)<<bits - 1)
	kg, RB := L.kg, L.rowBytes
	G := ceilDiv(T, kg)
	var mn, mx, zf, inv [MaxHeadDim]float32
	var kmn, kmx [MaxHeadDim]int32
	var u [MaxHeadDim + 8]uint8
	var scratch []float32 // sanitized copy of a group with NaN/Inf; rare
	for l := 0; l < L.s.Layers; l++ {
		for g := 0; g < G; g++ {
			t0 := g * kg
			t1 := min(T, t0+kg)
			ts := max(t0, L.nSink) // first non-sink row
			for h := 0; h < H; h++ {
				p := params[(((l*G+g)*H)+h)*D*4:][:D*4]
				if ts >= t1 {
					clear(p)
					for t := t0; t < t1; t++ {
						clear(codes[((l*T+t)*H+h)*RB:][:RB])
					}
					continue
				}
				base, off, stride := x, ((l*T+ts)*H+h)*D, H*D
				n := t1 - ts
				if !minmaxRows(mn[:D], mx[:D], base, off, stride, n, kmn[:D], kmx[:D]) {
					if scratch == nil {
						scratch = make([]float32, kg*D)
					}
					for i := 0; i < n; i++ {
						sanitizeRow(scratch[i*D:(i+1)*D], base[off+i*stride:][:D])
					}
					base, off, stride = scratch, 0, D
					minmaxRows(mn[:D], mx[:D], base, off, stride, n, kmn[:D], kmx[:D])
				}
				for d := 0; d < D; d++ {
					z16 := floorF16(mn[d])
					z := f16Table[z16]
					s16 := ceilF16((mx[d] - z) / qmax)
					s := f16Table[s16]
					zf[d] = z
					inv[d] = 0
					if s > 0 {
						inv[d] = 1 / s
					}
					binary.LittleEndian.PutUint16(p[4*d:], s16)
					binary.LittleEndian.PutUint16(p[4*d+2:], z16)
				}
				for t := t0; t < t1; t++ {
					cr := codes[((l*T+t)*H+h)*RB:][:RB]
					if t < ts {
						clear(cr)
						continue
					}
					row := base[off+(t-ts)*stride:][:D]
					quantPack(cr, u[:D], row, zf[:D], inv[:D], bits)
				}
			}
		}
	}
}

// minmaxRows computes per-channel min and max over n rows of len(mn)
// floats starting at x[off], stride apart, in order-key space (see
// orderKey). It reports false when some value is NaN, infinite or beyond
// the f16 range.
func minmaxRows(mn, mx []float32, x []float32, off, stride, n int, kmn, kmx []int32) bool {
	D := len(mn)
	kmn = kmn[:D]
	kmx = kmx[:D]
	for d, b := range float32Bits(x[off : off+D]) {
		k := orderKey(b)
		kmn[d], kmx[d] = k, k
	}
	for i := 1; i < n; i++ {
		row := float32Bits(x[off+i*stride:][:D])
		for d, b := range row {
			k := orderKey(b)
			kmn[d] = min(kmn[d], k)
			kmx[d] = max(kmx[d], k)
		}
	}
	ok := true
	mx = mx[:D]
	for d := range kmn {
		ok = ok && kmn[d] >= keyMin && kmx[d] <= keyMax
		mn[d], mx[d] = keyFloat(kmn[d]), keyFloat(kmx[d])
	}
	return ok
}

// quantPack quantizes a row channel by channel (x -> (x-zero)*inv) and
// packs the codes into dst. With zero <= x and (x-zero)*inv <=
// qmax(1+2^-22) by construction, adding 2^23 leaves the RNE code in the low
// mantissa bits. The common even-width rows take a fused path that never
// stores the unpacked codes.
func quantPack(dst []byte, u []uint8, row, zf, inv []float32, bits int) {
	D := len(u)
	row = row[:D]
	zf = zf[:D]
	inv = inv[:D]
	switch {
	case bits == 4 && D%2 == 0:
		dst = dst[:D/2]
		for j := range dst {
			x := row[2*j : 2*j+2 : 2*j+2]
			z := zf[2*j : 2*j+2 : 2*j+2]
			v := inv[2*j : 2*j+2 : 2*j+2]
			c0 := math.Float32bits((x[0]-z[0])*v[0] + (1 << 23))
			c1 := math.Float32bits((x[1]-z[1])*v[1] + (1 << 23))
			dst[j] = byte(c0&15 | (c1&15)<<4)
		}
	case bits == 2 && D%4 == 0:
		dst = dst[:D/4]
		for j := range dst {
			x := row[4*j : 4*j+4 : 4*j+4]
			z := zf[4*j : 4*j+4 : 4*j+4]
			v := inv[4*j : 4*j+4 : 4*j+4]
			c0 := math.Float32bits((x[0]-z[0])*v[0] + (1 << 23))
			c1 := math.Float32bits((x[1]-z[1])*v[1] + (1 << 23))
			c2 := math.Float32bits((x[2]-z[2])*v[2] + (1 << 23))
			c3 := math.Float32bits((x[3]-z[3])*v[3] + (1 << 23))
			dst[j] = byte(c0&3 | (c1&3)<<2 | (c2&3)<<4 | (c3&3)<<6)
		}
	default:
		for d, x := range row {
			u[d] = uint8(math.Float32bits((x-zf[d])*inv[d] + (1 << 23)))
		}
		pack(dst, u, bits)
	}
}

// minmax returns the min and max of a non-empty, NaN-free s, in order-key
// space with four accumulator pairs (the builtin float min/max are several
// times slower because of their NaN and -0 rules).
func minmax(s []float32) (float32, float32) {
	u := float32Bits(s)
	k := orderKey(u[0])
	mn0, mx0 := k, k
	mn1, mx1, mn2, mx2, mn3, mx3 := k, k, k, k, k, k
	i := 0
	for ; i+4 <= len(u); i += 4 {
		v := u[i : i+4 : i+4]
		k0, k1, k2, k3 := orderKey(v[0]), orderKey(v[1]), orderKey(v[2]), orderKey(v[3])
		mn0, mx0 = min(mn0, k0), max(mx0, k0)
		mn1, mx1 = min(mn1, k1), max(mx1, k1)
		mn2, mx2 = min(mn2, k2), max(mx2, k2)
		mn3, mx3 = min(mn3, k3), max(mx3, k3)
	}
	for ; i < len(u); i++ {
		k := orderKey(u[i])
		mn0, mx0 = min(mn0, k), max(mx0, k)
	}
	return keyFloat(min(mn0, mn1, mn2, mn3)), keyFloat(max(mx0, mx1, mx2, mx3))
}

func pack(dst []byte, u []uint8, bits int) {
	if bits == 4 {
		n := len(u) / 2
		dst = dst[:n+len(u)%2]
		for j := 0; j < n; j++ {
			dst[j] = u[2*j]&15 | u[2*j+1]<<4
		}
		if len(u)%2 != 0 {
			dst[n] = u[2*n] & 15
		}
		return
	}
	n := len(u) / 4
	dst = dst[:n+min(len(u)%4, 1)]
	for j := 0; j < n; j++ {
		q := u[4*j : 4*j+4 : 4*j+4]
		dst[j] = q[0]&3 | (q[1]&3)<<2 | (q[2]&3)<<4 | q[3]<<6
	}
	if r := len(u) % 4; r != 0 {
		var b byte
		for i := 0; i < r; i++ {
			b |= (u[4*n+i] & 3) << (2 * i)
		}
		dst[n] = b
	}
}

// unpack expands a packed row into one code per byte; u must have room for
// len(src)*8/bits codes (padding codes included).
func unpack(u []uint8, src []byte, bits int) {
	if bits == 4 {
		u = u[:2*len(src)]
		for j, b := range src {
			u[2*j] = b & 15
			u[2*j+1] = b >> 4
		}
		return
	}
	u = u[:4*len(src)]
	for j, b := range src {
		q := u[4*j : 4*j+4 : 4*j+4]
		q[0] = b & 3
		q[1] = b >> 2 & 3
		q[2] = b >> 4 & 3
		q[3] = b >> 6
	}
}

func encodeKIVIValues(L *layout, x []float32, params, codes []byte) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	qmax := float32(int(1)<<bits - 1)
	vg, RB := L.vg, L.rowBytes
	NG := ceilDiv(D, vg)
	var buf [MaxHeadDim]float32
	var u [MaxHeadDim + 8]uint8
	r := 0
	for l := 0; l < L.s.Layers; l++ {
		for t := 0; t < T; t++ {
			for h := 0; h < H; h++ {
				cr := codes[r*RB:][:RB]
				p := params[r*NG*4:][:NG*4]
				row := x[r*D:][:D]
				r++
				if t < L.nSink {
					clear(cr)
					clear(p)
					continue
				}
				if absmaxBits(row) > f16MaxBits {
					row = sanitizeRow(buf[:D], row)
				}
				for j := 0; j < NG; j++ {
					d0 := j * vg
					seg := row[d0:min(D, d0+vg)]
					mn, mx := minmax(seg)
					z16 := floorF16(mn)
					z := f16Table[z16]
					s16 := ceilF16((mx - z) / qmax)
					var inv float32
					if s := f16Table[s16]; s > 0 {
						inv = 1 / s
					}
					binary.LittleEndian.PutUint16(p[4*j:], s16)
					binary.LittleEndian.PutUint16(p[4*j+2:], z16)
					us := u[d0 : d0+len(seg)]
					for i, v := range seg {
						us[i] = uint8(math.Float32bits((v-z)*inv + (1 << 23)))
					}
				}
				pack(cr, u[:D], bits)
			}
		}
	}
}

func decodeKIVIKeys(L *layout, params, codes []byte, y []float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	kg, RB := L.kg, L.rowBytes
	G := ceilDiv(T, kg)
	var sf, zf [MaxHeadDim]float32
	var u [MaxHeadDim + 8]uint8
	for l := 0; l < L.s.Layers; l++ {
		for g := 0; g < G; g++ {
			t0 := g * kg
			t1 := min(T, t0+kg)
			for h := 0; h < H; h++ {
				p := params[(((l*G+g)*H)+h)*D*4:][:D*4]
				for d := 0; d < D; d++ {
					sf[d] = f16Table[binary.LittleEndian.Uint16(p[4*d:])]
					zf[d] = f16Table[binary.LittleEndian.Uint16(p[4*d+2:])]
				}
				for t := t0; t < t1; t++ {
					o := (l*T+t)*H + h
					out := y[o*D:][:D]
					cr := codes[o*RB:][:RB]
					dequantChannels(out, cr, sf[:D], zf[:D], u[:], bits)
				}
			}
		}
	}
}

func dequantChannels(out []float32, cr []byte, sf, zf []float32, u []uint8, bits int) {
	D := len(out)
	sf = sf[:D]
	zf = zf[:D]
	cf := &codeFloats
	if bits == 4 && D%2 == 0 {
		cr = cr[:D/2]
		for j, b := range cr {
			o := out[2*j : 2*j+2 : 2*j+2]
			s := sf[2*j : 2*j+2 : 2*j+2]
			z := zf[2*j : 2*j+2 : 2*j+2]
			o[0] = cf[b&15]*s[0] + z[0]
			o[1] = cf[b>>4]*s[1] + z[1]
		}
		return
	}
	unpack(u, cr, bits)
	u = u[:D]
	for d := range out {
		out[d] = cf[u[d]&15]*sf[d] + zf[d]
	}
}

func decodeKIVIValues(L *layout, params, codes []byte, y []float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	qmax := 1<<bits - 1
	vg, RB := L.vg, L.rowBytes
	NG := ceilDiv(D, vg)
	rows := L.s.Layers * T * H
	var u [MaxHeadDim + 8]uint8
	var lut [16]float32
	for r := 0; r < rows; r++ {
		p := params[r*NG*4:][:NG*4]
		out := y[r*D:][:D]
		unpack(u[:], codes[r*RB:][:RB], bits)
		for j := 0; j < NG; j++ {
			s := f16Table[binary.LittleEndian.Uint16(p[4*j:])]
			z := f16Table[binary.LittleEndian.Uint16(p[4*j+2:])]
			for c := 0; c <= qmax; c++ {
				lut[c] = codeFloats[c]*s + z
			}
			d0 := j * vg
			seg := out[d0:min(D, d0+vg)]
			us := u[d0 : d0+len(seg)]
			for i, c := range us {
				seg[i] = lut[c&15]
			}
		}
	}
}
