package model

import (
	"math"
	"sync"
)

// attention computes, for n query rows at positions p0..p0+n-1, causal
// grouped-query attention over the first p0+n cached keys/values.
// q and out are [n][heads][headDim]; kc and vc are [tokens][kvHeads][headDim].
//
// Work is split by (head, tile of 4 query rows). A tile's scores against
// all its keys come from the matmul kernels (canonical dot order), the
// softmax uses float32 exp32 with a float64 sum in increasing key order, and
// the weighted value sum is one fused multiply-add chain per output element
// in increasing key order (pvRef). Each element's arithmetic therefore
// depends only on its own position and the keys before it, never on n, p0
// or the tiling: the result is split-invariant.
//
// Rows of a tile shorter than four (decode above all) go through
// attendRow instead, one row at a time with the one-row kernels, in the
// same arithmetic: the same bits, in less than half the time.
func attention(out, q, kc, vc []float32, p0, n, heads, kvHeads, headDim int) {
	active.attention(out, q, kc, vc, p0, n, heads, kvHeads, headDim)
}

// attnScratch holds per-task score and accumulator buffers.
var attnScratch = sync.Pool{New: func() any { return new([]float32) }}

func (ks *kernels) attention(out, q, kc, vc []float32, p0, n, heads, kvHeads, headDim int) {
	group := heads / kvHeads
	kvDim := kvHeads * headDim
	qd := heads * headDim
	scale := float32(1 / math.Sqrt(float64(headDim)))
	const tile = 4
	tiles := (n + tile - 1) / tile
	parallel(heads*tiles, func(task int) {
		h, t0 := task/tiles, (task%tiles)*tile
		rows := min(n, t0+tile) - t0
		off := (h / group) * headDim
		nk := p0 + t0 + rows // keys of the tile's last row
		buf := attnScratch.Get().(*[]float32)
		defer attnScratch.Put(buf)
		need := rows * (nk + headDim)
		if cap(*buf) < need {
			*buf = make([]float32, need)
		}
		s, acc := (*buf)[:rows*nk], (*buf)[rows*nk:need]
		clear(acc)
		if ks.qk1 != nil && rows < tile && headDim%16 == 0 {
			// Decode (and a short last tile): row by row.
			for r := range rows {
				t := t0 + r
				ks.attendRow(out[t*qd+h*headDim:t*qd+(h+1)*headDim], q[t*qd+h*headDim:t*qd+(h+1)*headDim],
					kc[off:], vc[off:], kvDim, s[r*nk:r*nk+p0+t+1], acc[r*headDim:(r+1)*headDim], scale)
			}
			return
		}
		// Scores of every row against the tile's keys; keys after a row's
		// own position are computed but not used.
		ks.f32Block(s, nk, q[t0*qd+h*headDim:], qd, rows, headDim, kc[off:], kvDim, 0, nk)
		var inv [tile]float32
		for r := range rows {
			row := s[r*nk : r*nk+p0+t0+r+1]
			for j := range row {
				row[j] *= scale
			}
			m := rowMax(row)
			ks.expAffine(row, row, 1, -m)
			inv[r] = float32(1 / sumF64(row))
		}
		// Weighted values: the keys every row has first (four rows at
		// once), then each row's own remaining keys.
		v := vc[off:]
		common := p0 + t0 + 1
		done := 0
		if ks.pv4 != nil && rows == tile && headDim%64 == 0 {
			_ = v[(common-1)*kvDim+headDim-1]
			ks.pv4(&s[0], nk, common, &v[0], kvDim, &acc[0], headDim, headDim/64)
			done = common
		}
		for r := range rows {
			own := p0 + t0 + r + 1
			p := s[r*nk+done : r*nk+own]
			a := acc[r*headDim : (r+1)*headDim]
			if ks.pv1 != nil && headDim%64 == 0 && len(p) > 0 {
				_ = v[(own-1)*kvDim+headDim-1]
				ks.pv1(&p[0], len(p), &v[done*kvDim], kvDim, &a[0], headDim/64)
			} else {
				pvRef(p, v[done*kvDim:], kvDim, a)
			}
			o := out[(t0+r)*qd+h*headDim : (t0+r)*qd+(h+1)*headDim]
			for d := range o {
				o[d] = a[d] * inv[r]
			}
		}
	})
}

// attendRow is one query row q (headDim values) of attention over the
// len(s) keys and values at kc and vc (row stride kvDim), into out, with
// s and acc (zeroed, headDim) as scratch: the same arithmetic as the tile
// path. The scores come from the one-row kernel (scale and maximum in the
// same pass), the value sum and the softmax denominator from one pass of
// pv1sum where the head dim allows.
func (ks *kernels) attendRow(out, q, kc, vc []float32, kvDim int, s, acc []float32, scale float32) {
	headDim, nk := len(q), len(s)
	_ = kc[(nk-1)*kvDim+headDim-1]
	_ = vc[(nk-1)*kvDim+headDim-1]
	m, ordered := ks.qk1(&q[0], &kc[0], kvDim, headDim/16, nk, scale, &s[0])
	if !ordered || m == 0 {
		m = rowMax(s) // Go's max: NaN wins, +0 over -0
	}
	ks.expAffine(s, s, 1, -m)
	var sum float64
	if ks.pv1sum != nil && headDim%64 == 0 {
		sum = ks.pv1sum(&s[0], nk, &vc[0], kvDim, &acc[0], headDim/64)
	} else {
		pvRef(s, vc, kvDim, acc)
		sum = sumF64(s)
	}
	inv := float32(1 / sum)
	for d := range out {
		out[d] = acc[d] * inv
	}
}

// sumF64 is the softmax denominator: the float64 sum in increasing order.
func sumF64(x []float32) float64 {
	var sum float64
	for _, e := range x {
		sum += float64(e)
	}
	return sum
}

// rowMax returns the largest of row, -Inf for none, NaN if any is NaN.
func rowMax(row []float32) float32 {
	m := float32(math.Inf(-1))
	for _, x := range row {
		m = max(m, x)
	}
	return m
}

// pvRef is the canonical weighted value sum: acc[d] += p[j]*v[j*vs+d] with
// one fused multiply-add per term, in increasing j.
func pvRef(p, v []float32, vs int, acc []float32) {
	for j, pj := range p {
		vj := v[j*vs : j*vs+len(acc)]
		for d, x := range vj {
			acc[d] = fma32(pj, x, acc[d])
		}
	}
}
