package kvblock

import (
	"encoding/binary"
	"math"

	"github.com/kvcache/kvcache/internal/half"
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

// scratch holds the sanitized copy of a group with NaN/Inf (rare); it is
// allocated on first use and kept by the caller across calls.
func encodeKIVIKeys(L *layout, x []float32, params, codes []byte, scratch *[]float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	qmax := float32(int(1)<<bits - 1)
	kg, RB := L.kg, L.rowBytes
	G := ceilDiv(T, kg)
	var mn, mx, zf, inv [MaxHeadDim]float32
	var kmn, kmx [MaxHeadDim]int32
	var u [MaxHeadDim + 8]uint8
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
					if len(*scratch) < kg*D {
						*scratch = make([]float32, kg*D)
					}
					sc := *scratch
					for i := 0; i < n; i++ {
						sanitizeRow(sc[i*D:(i+1)*D], base[off+i*stride:][:D])
					}
					base, off, stride = sc, 0, D
					minmaxRows(mn[:D], mx[:D], base, off, stride, n, kmn[:D], kmx[:D])
				}
				for d := 0; d < D; d++ {
					z16 := floorF16Fast(mn[d])
					z := half.ToFloat32(z16)
					s16 := ceilF16Fast((mx[d] - z) / qmax)
					s := half.ToFloat32(s16)
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
	if useSIMD && D%16 == 0 {
		simdMinmaxRowKeys(kmn, kmx, x, off, stride, n)
	} else {
		minmaxRowKeys(kmn, kmx, x, off, stride, n)
	}
	ok := true
	mx = mx[:D]
	for d := range kmn {
		ok = ok && kmn[d] >= keyMin && kmx[d] <= keyMax
		mn[d], mx[d] = keyFloat(kmn[d]), keyFloat(kmx[d])
	}
	return ok
}

// minmaxRowKeys is the scalar order-key loop of minmaxRows.
func minmaxRowKeys(kmn, kmx []int32, x []float32, off, stride, n int) {
	D := len(kmn)
	kmx = kmx[:D]
	u := float32Bits(x)
	for d, b := range u[off : off+D] {
		k := orderKey(b)
		kmn[d], kmx[d] = k, k
	}
	// Rows are read whole (they are a multiple of 4 KiB apart, so walking
	// a group column-wise would thrash the L1 sets) and four at a time, to
	// cut the read-modify-write of the running min/max per element by 4.
	i := 1
	for ; i+4 <= n; i += 4 {
		o := off + i*stride
		r0 := u[o:][:D]
		r1 := u[o+stride:][:D]
		r2 := u[o+2*stride:][:D]
		r3 := u[o+3*stride:][:D]
		for d := range kmn {
			k0, k1, k2, k3 := orderKey(r0[d]), orderKey(r1[d]), orderKey(r2[d]), orderKey(r3[d])
			kmn[d] = min(kmn[d], min(k0, k1), min(k2, k3))
			kmx[d] = max(kmx[d], max(k0, k1), max(k2, k3))
		}
	}
	for ; i < n; i++ {
		o := off + i*stride
		row := u[o:][:D]
		for d := range kmn {
			k := orderKey(row[d])
			kmn[d] = min(kmn[d], k)
			kmx[d] = max(kmx[d], k)
		}
	}
}

// quantPack quantizes a row channel by channel (x -> (x-zero)*inv) and
// packs the codes into dst. With zero <= x and (x-zero)*inv <=
// qmax(1+2^-22) by construction, adding 2^23 leaves the RNE code in the low
// mantissa bits. The common even-width rows take a fused path that never
// stores the unpacked codes.
func quantPack(dst []byte, u []uint8, row, zf, inv []float32, bits int) {
	D := len(u)
	if useSIMD && (bits == 4 || bits == 2) && D%16 == 0 {
		simdQuantPack(dst, row, zf, inv, bits)
		return
	}
	row = row[:D]
	zf = zf[:D]
	inv = inv[:D]
	switch {
	case bits == 4 && D%8 == 0:
		dst = dst[:D/2]
		for j := 0; j < D; j += 8 {
			x := row[j : j+8 : j+8]
			z := zf[j : j+8 : j+8]
			v := inv[j : j+8 : j+8]
			d := dst[j/2 : j/2+4 : j/2+4]
			c0 := math.Float32bits((x[0]-z[0])*v[0] + (1 << 23))
			c1 := math.Float32bits((x[1]-z[1])*v[1] + (1 << 23))
			d[0] = byte(c0&15 | (c1&15)<<4)
			c2 := math.Float32bits((x[2]-z[2])*v[2] + (1 << 23))
			c3 := math.Float32bits((x[3]-z[3])*v[3] + (1 << 23))
			d[1] = byte(c2&15 | (c3&15)<<4)
			c4 := math.Float32bits((x[4]-z[4])*v[4] + (1 << 23))
			c5 := math.Float32bits((x[5]-z[5])*v[5] + (1 << 23))
			d[2] = byte(c4&15 | (c5&15)<<4)
			c6 := math.Float32bits((x[6]-z[6])*v[6] + (1 << 23))
			c7 := math.Float32bits((x[7]-z[7])*v[7] + (1 << 23))
			d[3] = byte(c6&15 | (c7&15)<<4)
		}
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

// maxValueGroups bounds the value groups per row Encode writes: it always
// uses groups of min(DefaultGroup, HeadDim) channels.
const maxValueGroups = (MaxHeadDim + DefaultGroup - 1) / DefaultGroup

func encodeKIVIValues(L *layout, x []float32, params, codes []byte) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	vg, RB := L.vg, L.rowBytes
	NG := ceilDiv(D, vg)
	// The fused path packs a group's codes straight into 32-bit words.
	fast := D%vg == 0 && (bits == 4 && vg%8 == 0 || bits == 2 && vg%16 == 0)
	var buf [MaxHeadDim]float32
	var u [MaxHeadDim + 8]uint8
	var zs, invs [maxValueGroups]float32
	r := 0
	for l := 0; l < L.s.Layers; l++ {
		for t := 0; t < T; t++ {
			if t < L.nSink {
				clear(codes[r*RB : (r+H)*RB])
				clear(params[r*NG*4 : (r+H)*NG*4])
				r += H
				continue
			}
			for h := 0; h < H; h++ {
				cr := codes[r*RB:][:RB]
				p := params[r*NG*4:][:NG*4]
				row := x[r*D:][:D]
				r++
				if !valueParams(p, zs[:NG], invs[:NG], row, vg, bits) {
					row = sanitizeRow(buf[:D], row)
					valueParams(p, zs[:NG], invs[:NG], row, vg, bits)
				}
				switch {
				case useSIMD && vg%16 == 0 && D%vg == 0:
					simdQuantGroups(cr, row, zs[:NG], invs[:NG], vg, bits)
				case fast && bits == 4:
					quantGroups4(cr, row, zs[:NG], invs[:NG], vg)
				case fast:
					quantGroups2(cr, row, zs[:NG], invs[:NG], vg)
				default:
					for j := 0; j < NG; j++ {
						d0 := j * vg
						seg := row[d0:min(D, d0+vg)]
						z, inv := zs[j], invs[j]
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
}

// valueParams writes the (scale, zero) pairs of a row's value groups to p
// and their zero and reciprocal scale to zs and invs. It first finds every
// group's min and max, then derives all parameters, so the groups' long
// rounding chains overlap. It reports false, leaving p undefined, when the
// row holds NaN, infinite or out-of-range values.
func valueParams(p []byte, zs, invs []float32, row []float32, vg, bits int) bool {
	qmax := float32(int(1)<<bits - 1)
	D := len(row)
	NG := len(zs)
	invs = invs[:NG]
	p = p[:4*NG]
	var mns, mxs [maxValueGroups]int32
	if useSIMD && vg%16 == 0 && D%vg == 0 {
		simdGroupKeys(row, vg, mns[:NG], mxs[:NG])
	} else {
		for j := 0; j < NG; j++ {
			d0 := j * vg
			mns[j], mxs[j] = minmaxKeys(row[d0:min(D, d0+vg)])
		}
	}
	mn := min(slicesMin(mns[:NG]), keyMax)
	mx := max(slicesMax(mxs[:NG]), keyMin)
	if mn < keyMin || mx > keyMax {
		return false
	}
	for j := 0; j < NG; j++ {
		z16 := floorF16Fast(keyFloat(mns[j]))
		z := half.ToFloat32(z16)
		s16 := ceilF16Fast((keyFloat(mxs[j]) - z) / qmax)
		var inv float32
		if s := half.ToFloat32(s16); s > 0 {
			inv = 1 / s
		}
		zs[j], invs[j] = z, inv
		binary.LittleEndian.PutUint16(p[4*j:], s16)
		binary.LittleEndian.PutUint16(p[4*j+2:], z16)
	}
	return true
}

func slicesMin(s []int32) int32 {
	m := s[0]
	for _, v := range s[1:] {
		m = min(m, v)
	}
	return m
}

func slicesMax(s []int32) int32 {
	m := s[0]
	for _, v := range s[1:] {
		m = max(m, v)
	}
	return m
}

// quantGroups4 quantizes and packs a row whose groups of vg (a multiple of
// 8, dividing len(row)) channels share a zero and reciprocal scale.
func quantGroups4(dst []byte, row []float32, zs, invs []float32, vg int) {
	dst = dst[:len(row)/2]
	for j := range zs {
		z, inv := zs[j], invs[j]
		seg := row[j*vg : (j+1)*vg]
		d := dst[j*vg/2 : (j+1)*vg/2]
		seg = seg[:2*len(d)]
		for k := 0; k+4 <= len(d); k += 4 {
			x := seg[2*k : 2*k+8 : 2*k+8]
			dk := d[k : k+4 : k+4]
			c0 := math.Float32bits((x[0]-z)*inv + (1 << 23))
			c1 := math.Float32bits((x[1]-z)*inv + (1 << 23))
			dk[0] = byte(c0&15 | (c1&15)<<4)
			c2 := math.Float32bits((x[2]-z)*inv + (1 << 23))
			c3 := math.Float32bits((x[3]-z)*inv + (1 << 23))
			dk[1] = byte(c2&15 | (c3&15)<<4)
			c4 := math.Float32bits((x[4]-z)*inv + (1 << 23))
			c5 := math.Float32bits((x[5]-z)*inv + (1 << 23))
			dk[2] = byte(c4&15 | (c5&15)<<4)
			c6 := math.Float32bits((x[6]-z)*inv + (1 << 23))
			c7 := math.Float32bits((x[7]-z)*inv + (1 << 23))
			dk[3] = byte(c6&15 | (c7&15)<<4)
		}
	}
}

// quantGroups2 is quantGroups4 for 2-bit codes, vg a multiple of 16.
func quantGroups2(dst []byte, row []float32, zs, invs []float32, vg int) {
	dst = dst[:len(row)/4]
	for j := range zs {
		z, inv := zs[j], invs[j]
		seg := row[j*vg : (j+1)*vg]
		d := dst[j*vg/4 : (j+1)*vg/4]
		for i := 0; i+16 <= len(seg); i += 16 {
			x := seg[i : i+16 : i+16]
			dk := d[i/4 : i/4+4 : i/4+4]
			for q := 0; q < 4; q++ {
				y := x[4*q : 4*q+4 : 4*q+4]
				c0 := math.Float32bits((y[0]-z)*inv + (1 << 23))
				c1 := math.Float32bits((y[1]-z)*inv + (1 << 23))
				c2 := math.Float32bits((y[2]-z)*inv + (1 << 23))
				c3 := math.Float32bits((y[3]-z)*inv + (1 << 23))
				dk[q] = byte(c0&3 | (c1&3)<<2 | (c2&3)<<4 | (c3&3)<<6)
			}
		}
	}
}

// minmaxKeys returns the min and max order keys of a non-empty s.
func minmaxKeys(s []float32) (int32, int32) {
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
	return min(mn0, mn1, mn2, mn3), max(mx0, mx1, mx2, mx3)
}

// keyWide bounds KVHeads*HeadDim for which decodeKIVIKeys gathers the
// channel parameters of all heads of a key group first and then decodes
// each token's heads as one contiguous row (sequential writes instead of
// one head at a time, KVHeads rows apart).
const keyWide = 2048

func decodeKIVIKeys(L *layout, params, codes []byte, y []float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	kg, RB := L.kg, L.rowBytes
	G := ceilDiv(T, kg)
	if W := H * D; W <= keyWide && RB*8 == D*bits && (bits == 4 && D%8 == 0 || bits == 2 && D%16 == 0) {
		var sf, zf [keyWide]float32
		var u [8]uint8
		simd := useSIMD && D%16 == 0
		for l := 0; l < L.s.Layers; l++ {
			for g := 0; g < G; g++ {
				t0 := g * kg
				t1 := min(T, t0+kg)
				p := params[(l*G+g)*W*4:][:W*4]
				if !vdec.pairs(sf[:W], zf[:W], p) {
					for d := 0; d < W; d++ {
						sf[d] = half.ToFloat32(binary.LittleEndian.Uint16(p[4*d:]))
						zf[d] = half.ToFloat32(binary.LittleEndian.Uint16(p[4*d+2:]))
					}
				}
				o := l*T + t0
				if bits == 4 && vdec.channels4(y[o*W:][:(t1-t0)*W], codes[o*H*RB:][:(t1-t0)*H*RB], sf[:W], zf[:W], t1-t0) {
					continue
				}
				if simd {
					simdDequantKeys(y, codes, sf[:W], zf[:W], l*T+t0, 1, t1-t0, H*RB, bits)
					continue
				}
				for t := t0; t < t1; t++ {
					o := l*T + t
					dequantChannels(y[o*W:][:W], codes[o*H*RB:][:H*RB], sf[:W], zf[:W], u[:], bits)
				}
			}
		}
		return
	}
	var sf, zf [MaxHeadDim]float32
	var u [MaxHeadDim + 8]uint8
	for l := 0; l < L.s.Layers; l++ {
		for g := 0; g < G; g++ {
			t0 := g * kg
			t1 := min(T, t0+kg)
			for h := 0; h < H; h++ {
				p := params[(((l*G+g)*H)+h)*D*4:][:D*4]
				for d := 0; d < D; d++ {
					sf[d] = half.ToFloat32(binary.LittleEndian.Uint16(p[4*d:]))
					zf[d] = half.ToFloat32(binary.LittleEndian.Uint16(p[4*d+2:]))
				}
				for t := t0; t < t1; t++ {
					o := (l*T+t)*H + h
					out := y[o*D:][:D]
					cr := codes[o*RB:][:RB]
					if bits == 4 && RB*2 == D && vdec.channels4(out, cr, sf[:D], zf[:D], 1) {
						continue
					}
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
	if bits == 4 && D%8 == 0 {
		cr = cr[:D/2]
		for j := 0; j < D; j += 8 {
			w := binary.LittleEndian.Uint32(cr[j/2:])
			o := out[j : j+8 : j+8]
			s := sf[j : j+8 : j+8]
			z := zf[j : j+8 : j+8]
			o[0] = float32(cf[w&15]*s[0]) + z[0]
			o[1] = float32(cf[w>>4&15]*s[1]) + z[1]
			o[2] = float32(cf[w>>8&15]*s[2]) + z[2]
			o[3] = float32(cf[w>>12&15]*s[3]) + z[3]
			o[4] = float32(cf[w>>16&15]*s[4]) + z[4]
			o[5] = float32(cf[w>>20&15]*s[5]) + z[5]
			o[6] = float32(cf[w>>24&15]*s[6]) + z[6]
			o[7] = float32(cf[w>>28]*s[7]) + z[7]
		}
		return
	}
	if bits == 2 && D%16 == 0 {
		cr = cr[:D/4]
		for j := 0; j < D; j += 16 {
			w := binary.LittleEndian.Uint32(cr[j/4:])
			o := out[j : j+16 : j+16]
			s := sf[j : j+16 : j+16]
			z := zf[j : j+16 : j+16]
			for q := 0; q < 16; q += 4 {
				v := w >> (2 * q)
				oq := o[q : q+4 : q+4]
				sq := s[q : q+4 : q+4]
				zq := z[q : q+4 : q+4]
				oq[0] = float32(cf[v&3]*sq[0]) + zq[0]
				oq[1] = float32(cf[v>>2&3]*sq[1]) + zq[1]
				oq[2] = float32(cf[v>>4&3]*sq[2]) + zq[2]
				oq[3] = float32(cf[v>>6&3]*sq[3]) + zq[3]
			}
		}
		return
	}
	if bits == 4 && D%2 == 0 {
		cr = cr[:D/2]
		for j, b := range cr {
			o := out[2*j : 2*j+2 : 2*j+2]
			s := sf[2*j : 2*j+2 : 2*j+2]
			z := zf[2*j : 2*j+2 : 2*j+2]
			o[0] = float32(cf[b&15]*s[0]) + z[0]
			o[1] = float32(cf[b>>4]*s[1]) + z[1]
		}
		return
	}
	unpack(u, cr, bits)
	u = u[:D]
	for d := range out {
		out[d] = float32(cf[u[d]&15]*sf[d]) + zf[d]
	}
}

func decodeKIVIValues(L *layout, params, codes []byte, y []float32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	bits := L.codec.kivi()
	qmax := 1<<bits - 1
	vg, RB := L.vg, L.rowBytes
	NG := ceilDiv(D, vg)
	rows := L.s.Layers * T * H
	fast := D%vg == 0 && (bits == 4 && vg%8 == 0 || bits == 2 && vg%16 == 0)
	if bits == 4 && fast && RB*2 == D && vdec.groups4(y[:rows*D], codes[:rows*RB], params[:rows*NG*4], vg) {
		return
	}
	if fast && useSIMD && vg%16 == 0 {
		simdDequantValues(y[:rows*D], params, codes, D, vg, RB, bits)
		return
	}
	var u [MaxHeadDim + 8]uint8
	var lut [16]float32
	for r := 0; r < rows; r++ {
		p := params[r*NG*4:][:NG*4]
		out := y[r*D:][:D]
		cr := codes[r*RB:][:RB]
		if fast {
			for j := 0; j < NG; j++ {
				s := half.ToFloat32(binary.LittleEndian.Uint16(p[4*j:]))
				z := half.ToFloat32(binary.LittleEndian.Uint16(p[4*j+2:]))
				for c := 0; c <= qmax; c++ {
					lut[c] = float32(codeFloats[c]*s) + z
				}
				seg := out[j*vg : (j+1)*vg]
				if bits == 4 {
					cs := cr[j*vg/2 : (j+1)*vg/2]
					i := 0
					for ; i+16 <= len(seg); i += 16 {
						w := binary.LittleEndian.Uint64(cs[i/2:])
						o := (*[16]float32)(seg[i:])
						o[0], o[1], o[2], o[3] = lut[w&15], lut[w>>4&15], lut[w>>8&15], lut[w>>12&15]
						o[4], o[5], o[6], o[7] = lut[w>>16&15], lut[w>>20&15], lut[w>>24&15], lut[w>>28&15]
						o[8], o[9], o[10], o[11] = lut[w>>32&15], lut[w>>36&15], lut[w>>40&15], lut[w>>44&15]
						o[12], o[13], o[14], o[15] = lut[w>>48&15], lut[w>>52&15], lut[w>>56&15], lut[w>>60]
					}
					if i < len(seg) {
						w := binary.LittleEndian.Uint32(cs[i/2:])
						o := (*[8]float32)(seg[i:])
						o[0], o[1], o[2], o[3] = lut[w&15], lut[w>>4&15], lut[w>>8&15], lut[w>>12&15]
						o[4], o[5], o[6], o[7] = lut[w>>16&15], lut[w>>20&15], lut[w>>24&15], lut[w>>28]
					}
				} else {
					cs := cr[j*vg/4 : (j+1)*vg/4]
					for i := 0; i+16 <= len(seg); i += 16 {
						w := binary.LittleEndian.Uint32(cs[i/4:])
						o := seg[i : i+16 : i+16]
						o[0], o[1], o[2], o[3] = lut[w&3], lut[w>>2&3], lut[w>>4&3], lut[w>>6&3]
						o[4], o[5], o[6], o[7] = lut[w>>8&3], lut[w>>10&3], lut[w>>12&3], lut[w>>14&3]
						o[8], o[9], o[10], o[11] = lut[w>>16&3], lut[w>>18&3], lut[w>>20&3], lut[w>>22&3]
						o[12], o[13], o[14], o[15] = lut[w>>24&3], lut[w>>26&3], lut[w>>28&3], lut[w>>30]
					}
				}
			}
			continue
		}
		unpack(u[:], cr, bits)
		for j := 0; j < NG; j++ {
			s := half.ToFloat32(binary.LittleEndian.Uint16(p[4*j:]))
			z := half.ToFloat32(binary.LittleEndian.Uint16(p[4*j+2:]))
			for c := 0; c <= qmax; c++ {
				lut[c] = float32(codeFloats[c]*s) + z
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
