//go:build goexperiment.simd && amd64

package kvblock

import (
	"encoding/binary"
	"simd/archsimd"

	"github.com/kvcache/kvcache/internal/half"
)

// AVX-512 versions of the hot loops of the int8 and KIVI codecs, built only
// with GOEXPERIMENT=simd (see the package documentation). Each one computes
// exactly what the scalar loop it replaces computes: the same order keys
// for min/max, and the same two separately rounded float32 operations
// (multiply, then add of the rounding constant) per quantized value, never
// a fused multiply-add.

// Every entry point ends with VZEROUPPER (ClearAVXUpperBits): the rest of
// the package, hash/crc32 and the runtime use legacy SSE encodings, which
// run at about half speed for the whole thread while the upper halves of
// the vector registers are dirty (measured: scalar decode 3.6 -> 1.5 GB/s).

// useSIMD selects the vector loops; it is false on CPUs without AVX-512
// (F+CD+BW+DQ+VL), which then run the scalar code. Tests flip it to compare
// the two.
var useSIMD = archsimd.X86.AVX512()

// orderKeys16 is orderKey on 16 lanes.
func orderKeys16(v archsimd.Int32x16, m7f archsimd.Int32x16) archsimd.Int32x16 {
	return v.Xor(v.ShiftAllRight(31).And(m7f))
}

func hmin16(v archsimd.Int32x16) int32 {
	a := v.GetLo().Min(v.GetHi())
	b := a.GetLo().Min(a.GetHi())
	return min(b.GetElem(0), b.GetElem(1), b.GetElem(2), b.GetElem(3))
}

func hmax16(v archsimd.Int32x16) int32 {
	a := v.GetLo().Max(v.GetHi())
	b := a.GetLo().Max(a.GetHi())
	return max(b.GetElem(0), b.GetElem(1), b.GetElem(2), b.GetElem(3))
}

// simdGroupKeys is the min/max order keys of each group of vg channels of
// row; vg is a multiple of 16 dividing len(row), len(mns) groups.
func simdGroupKeys(row []float32, vg int, mns, mxs []int32) {
	m7f := archsimd.BroadcastInt32x16(0x7fffffff)
	mxs = mxs[:len(mns)]
	for j := range mns {
		seg := row[j*vg : (j+1)*vg]
		k := orderKeys16(archsimd.LoadFloat32x16Slice(seg).AsInt32x16(), m7f)
		mn, mx := k, k
		for i := 16; i+16 <= len(seg); i += 16 {
			k := orderKeys16(archsimd.LoadFloat32x16Slice(seg[i:]).AsInt32x16(), m7f)
			mn, mx = mn.Min(k), mx.Max(k)
		}
		mns[j], mxs[j] = hmin16(mn), hmax16(mx)
	}
	archsimd.ClearAVXUpperBits()
}

// pack4x16 packs 16 4-bit codes (one per 32-bit lane, high bits clear)
// into 8 bytes, element 2i in the low nibble of byte i.
func pack4x16(c archsimd.Int32x16) uint64 {
	u := c.AsUint64x8()
	return u.Or(u.ShiftAllRight(28)).TruncateToUint8().AsUint64x2().GetElem(0)
}

// pack2x16 packs 16 2-bit codes into 4 bytes, element 4i+k in bits 2k of
// byte i.
func pack2x16(c archsimd.Int32x16) uint32 {
	u := c.AsUint64x8()
	w := u.Or(u.ShiftAllRight(30)).TruncateToUint16().AsUint32x4()
	return w.Or(w.ShiftAllRight(12)).TruncateToUint8().AsUint32x4().GetElem(0)
}

// quant16 is bits((x-z)*inv + 2^23) & mask on 16 lanes.
func quant16(x, z, inv, magic archsimd.Float32x16, mask archsimd.Int32x16) archsimd.Int32x16 {
	return x.Sub(z).Mul(inv).Add(magic).AsInt32x16().And(mask)
}

// simdQuantGroups is quantGroups4/quantGroups2: vg a multiple of 16
// dividing len(row).
func simdQuantGroups(dst []byte, row []float32, zs, invs []float32, vg, bits int) {
	magic := archsimd.BroadcastFloat32x16(1 << 23)
	mask := archsimd.BroadcastInt32x16(int32(1)<<bits - 1)
	invs = invs[:len(zs)]
	for j := range zs {
		z := archsimd.BroadcastFloat32x16(zs[j])
		inv := archsimd.BroadcastFloat32x16(invs[j])
		seg := row[j*vg : (j+1)*vg]
		if bits == 4 {
			d := dst[j*vg/2 : (j+1)*vg/2]
			for i := 0; i+16 <= len(seg); i += 16 {
				c := quant16(archsimd.LoadFloat32x16Slice(seg[i:]), z, inv, magic, mask)
				binary.LittleEndian.PutUint64(d[i/2:], pack4x16(c))
			}
		} else {
			d := dst[j*vg/4 : (j+1)*vg/4]
			for i := 0; i+16 <= len(seg); i += 16 {
				c := quant16(archsimd.LoadFloat32x16Slice(seg[i:]), z, inv, magic, mask)
				binary.LittleEndian.PutUint32(d[i/4:], pack2x16(c))
			}
		}
	}
	archsimd.ClearAVXUpperBits()
}

// simdQuantPack is quantPack's fused paths for len(row) a multiple of 16,
// bits 4 or 2, with a zero and reciprocal scale per channel.
func simdQuantPack(dst []byte, row, zf, inv []float32, bits int) {
	magic := archsimd.BroadcastFloat32x16(1 << 23)
	mask := archsimd.BroadcastInt32x16(int32(1)<<bits - 1)
	D := len(row)
	zf = zf[:D]
	inv = inv[:D]
	if bits == 4 {
		dst = dst[:D/2]
		for i := 0; i+16 <= D; i += 16 {
			c := quant16(archsimd.LoadFloat32x16Slice(row[i:]), archsimd.LoadFloat32x16Slice(zf[i:]), archsimd.LoadFloat32x16Slice(inv[i:]), magic, mask)
			binary.LittleEndian.PutUint64(dst[i/2:], pack4x16(c))
		}
		archsimd.ClearAVXUpperBits()
		return
	}
	dst = dst[:D/4]
	for i := 0; i+16 <= D; i += 16 {
		c := quant16(archsimd.LoadFloat32x16Slice(row[i:]), archsimd.LoadFloat32x16Slice(zf[i:]), archsimd.LoadFloat32x16Slice(inv[i:]), magic, mask)
		binary.LittleEndian.PutUint32(dst[i/4:], pack2x16(c))
	}
	archsimd.ClearAVXUpperBits()
}

// simdMinmaxRowKeys is the order-key part of minmaxRows: per-channel
// min/max keys over n >= 1 rows of len(kmn) (a multiple of 16) floats
// starting at x[off], stride apart.
func simdMinmaxRowKeys(kmn, kmx []int32, x []float32, off, stride, n int) {
	m7f := archsimd.BroadcastInt32x16(0x7fffffff)
	D := len(kmn)
	kmx = kmx[:D]
	// Four channel vectors at a time across all rows keeps the running
	// min/max in registers.
	d := 0
	for ; d+64 <= D; d += 64 {
		r := x[off+d:][:64]
		k0 := orderKeys16(archsimd.LoadFloat32x16Slice(r[0:]).AsInt32x16(), m7f)
		k1 := orderKeys16(archsimd.LoadFloat32x16Slice(r[16:]).AsInt32x16(), m7f)
		k2 := orderKeys16(archsimd.LoadFloat32x16Slice(r[32:]).AsInt32x16(), m7f)
		k3 := orderKeys16(archsimd.LoadFloat32x16Slice(r[48:]).AsInt32x16(), m7f)
		n0, n1, n2, n3 := k0, k1, k2, k3
		x0, x1, x2, x3 := k0, k1, k2, k3
		for i := 1; i < n; i++ {
			r := x[off+i*stride+d:][:64]
			k0 := orderKeys16(archsimd.LoadFloat32x16Slice(r[0:]).AsInt32x16(), m7f)
			k1 := orderKeys16(archsimd.LoadFloat32x16Slice(r[16:]).AsInt32x16(), m7f)
			k2 := orderKeys16(archsimd.LoadFloat32x16Slice(r[32:]).AsInt32x16(), m7f)
			k3 := orderKeys16(archsimd.LoadFloat32x16Slice(r[48:]).AsInt32x16(), m7f)
			n0, n1, n2, n3 = n0.Min(k0), n1.Min(k1), n2.Min(k2), n3.Min(k3)
			x0, x1, x2, x3 = x0.Max(k0), x1.Max(k1), x2.Max(k2), x3.Max(k3)
		}
		n0.StoreSlice(kmn[d:])
		n1.StoreSlice(kmn[d+16:])
		n2.StoreSlice(kmn[d+32:])
		n3.StoreSlice(kmn[d+48:])
		x0.StoreSlice(kmx[d:])
		x1.StoreSlice(kmx[d+16:])
		x2.StoreSlice(kmx[d+32:])
		x3.StoreSlice(kmx[d+48:])
	}
	for ; d+16 <= D; d += 16 {
		k := orderKeys16(archsimd.LoadFloat32x16Slice(x[off+d:]).AsInt32x16(), m7f)
		mn, mx := k, k
		for i := 1; i < n; i++ {
			k := orderKeys16(archsimd.LoadFloat32x16Slice(x[off+i*stride+d:]).AsInt32x16(), m7f)
			mn, mx = mn.Min(k), mx.Max(k)
		}
		mn.StoreSlice(kmn[d:])
		mx.StoreSlice(kmx[d:])
	}
	archsimd.ClearAVXUpperBits()
}

// simdAbsmaxBits is absmaxBits for len(s) a multiple of 16.
func simdAbsmaxBits(s []float32) uint32 {
	abs := archsimd.BroadcastUint32x16(0x7fffffff)
	m := archsimd.LoadFloat32x16Slice(s).AsUint32x16().And(abs)
	for i := 16; i+16 <= len(s); i += 16 {
		m = m.Max(archsimd.LoadFloat32x16Slice(s[i:]).AsUint32x16().And(abs))
	}
	a := m.GetLo().Max(m.GetHi())
	b := a.GetLo().Max(a.GetHi())
	r := max(b.GetElem(0), b.GetElem(1), b.GetElem(2), b.GetElem(3))
	archsimd.ClearAVXUpperBits()
	return r
}

// simdQuantInt8 is quantInt8 for len(src) a multiple of 16.
func simdQuantInt8(dst []byte, src []float32, inv float32) {
	magic := archsimd.BroadcastFloat32x16(roundMagic)
	v := archsimd.BroadcastFloat32x16(inv)
	dst = dst[:len(src)]
	for i := 0; i+16 <= len(src); i += 16 {
		q := archsimd.LoadFloat32x16Slice(src[i:]).Mul(v).Add(magic).AsUint32x16().TruncateToUint8()
		q.Store((*[16]uint8)(dst[i:]))
	}
	archsimd.ClearAVXUpperBits()
}

// vzeroupper clears the upper vector state before the scalar (SSE) loops
// of Encode and Decode. In GOEXPERIMENT=simd builds the state is found dirty
// even in code that never ran a vector instruction (the unchanged scalar
// int8 Decode ran at 1.8 instead of 3.4 GB/s), so it is cleared on entry.
func vzeroupper() {
	if useSIMD {
		archsimd.ClearAVXUpperBits()
	}
}

// Decode side. code16 expands 16 packed codes (the low 64 bits of w for
// int4, the low 32 for int2; element i in bits i*bits) to one float per
// lane. cvt(c) == codeFloats[c], and each output below is that times the
// scale, rounded, plus the zero, rounded: exactly the scalar computation.
type codeExpander struct {
	idx, sh, mask archsimd.Uint32x16
	bits          int
}

func newCodeExpander(bits int) codeExpander {
	var e codeExpander
	e.bits = bits
	var idx, sh [16]uint32
	for i := range idx {
		if bits == 4 {
			idx[i], sh[i] = uint32(i/8), uint32(4*(i%8))
		} else {
			sh[i] = uint32(2 * i)
		}
	}
	e.idx = archsimd.LoadUint32x16(&idx)
	e.sh = archsimd.LoadUint32x16(&sh)
	e.mask = archsimd.BroadcastUint32x16(uint32(1)<<bits - 1)
	return e
}

func (e *codeExpander) codes16(cr []byte, j int) archsimd.Float32x16 {
	var v archsimd.Uint32x16
	if e.bits == 4 {
		v = archsimd.BroadcastUint64x8(binary.LittleEndian.Uint64(cr[j/2:])).AsUint32x16().Permute(e.idx)
	} else {
		v = archsimd.BroadcastUint32x16(binary.LittleEndian.Uint32(cr[j/4:]))
	}
	return v.ShiftRight(e.sh).And(e.mask).AsInt32x16().ConvertToFloat32()
}

// simdDequantKeys decodes the n key rows o0, o0+stride, ... of y (rows of
// len(sf) floats, a multiple of 16, rb code bytes each) with per-channel
// scales sf and zeros zf.
func simdDequantKeys(y []float32, codes []byte, sf, zf []float32, o0, stride, n, rb, bits int) {
	e := newCodeExpander(bits)
	D := len(sf)
	zf = zf[:D]
	for i := 0; i < n; i++ {
		o := o0 + i*stride
		out := y[o*D:][:D]
		cr := codes[o*rb:][:D*bits/8]
		for j := 0; j+16 <= D; j += 16 {
			s := archsimd.LoadFloat32x16((*[16]float32)(sf[j:]))
			z := archsimd.LoadFloat32x16((*[16]float32)(zf[j:]))
			e.codes16(cr, j).Mul(s).Add(z).Store((*[16]float32)(out[j:]))
		}
	}
	archsimd.ClearAVXUpperBits()
}

// simdDequantValues decodes all value rows of y (rows of D floats, groups
// of vg channels, vg a multiple of 16 dividing D, rb code bytes per row).
func simdDequantValues(y []float32, params, codes []byte, D, vg, rb, bits int) {
	e := newCodeExpander(bits)
	NG := D / vg
	rows := len(y) / D
	for r := 0; r < rows; r++ {
		p := params[r*NG*4:][:NG*4]
		out := y[r*D:][:D]
		cr := codes[r*rb:][:D*bits/8]
		for g := 0; g < NG; g++ {
			s := archsimd.BroadcastFloat32x16(half.ToFloat32(binary.LittleEndian.Uint16(p[4*g:])))
			z := archsimd.BroadcastFloat32x16(half.ToFloat32(binary.LittleEndian.Uint16(p[4*g+2:])))
			for j := g * vg; j < (g+1)*vg; j += 16 {
				e.codes16(cr, j).Mul(s).Add(z).Store((*[16]float32)(out[j:]))
			}
		}
	}
	archsimd.ClearAVXUpperBits()
}
