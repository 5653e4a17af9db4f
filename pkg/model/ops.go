package model

import "math"

// rmsNorm writes out[r] = x[r] / rms(x[r]) * w for n rows of width d. The
// sum of squares is accumulated in float64, in increasing index.
func rmsNorm(out, x, w []float32, n, d int, eps float64) {
	w = w[:d]
	for r := 0; r < n; r++ {
		xr := x[r*d : r*d+d]
		or := out[r*d : r*d+d]
		var ss float64
		for _, v := range xr {
			ss += float64(v) * float64(v)
		}
		scale := float32(1 / math.Sqrt(ss/float64(d)+eps))
		for i, v := range xr {
			or[i] = float32(v*scale) * w[i]
		}
	}
}

// ropeTable returns cos and sin, each [n][headDim/2], for positions
// p0..p0+n-1. Pair i of a head rotates by angle (p/scale)*theta^(-2i/hd).
func ropeTable(p0, n, headDim int, theta, scale float64) (cos, sin []float32) {
	half := headDim / 2
	cos = make([]float32, n*half)
	sin = make([]float32, n*half)
	for t := 0; t < n; t++ {
		pos := float64(p0+t) / scale
		for i := 0; i < half; i++ {
			freq := math.Pow(theta, -float64(2*i)/float64(headDim))
			s, c := math.Sincos(pos * freq)
			cos[t*half+i] = float32(c)
			sin[t*half+i] = float32(s)
		}
	}
	return cos, sin
}

// rope rotates adjacent pairs (2i, 2i+1) of every head of n rows of
// heads*headDim values (ggml's "normal" RoPE used by llama GGUF files).
func rope(x []float32, n, heads, headDim int, cos, sin []float32) {
	half := headDim / 2
	for t := 0; t < n; t++ {
		c := cos[t*half : t*half+half]
		s := sin[t*half : t*half+half]
		for h := 0; h < heads; h++ {
			v := x[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			for i := 0; i < half; i++ {
				a, b := v[2*i], v[2*i+1]
				v[2*i] = float32(a*c[i]) - float32(b*s[i])
				v[2*i+1] = float32(a*s[i]) + float32(b*c[i])
			}
		}
	}
}

// softmax normalizes x in place, stable for any finite input (the maximum
// is subtracted first). Exponentials and the sum are computed in float64.
func softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := x[0]
	for _, v := range x {
		m = max(m, v)
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - m))
		x[i] = float32(e)
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] = float32(float64(x[i]) * inv)
	}
}

// swiglu writes g[i] = silu(g[i]) * u[i].
func swiglu(g, u []float32) {
	u = u[:len(g)]
	for i, v := range g {
		s := float32(float64(v) / (1 + math.Exp(-float64(v))))
		g[i] = s * u[i]
	}
}

// addInto does x += y elementwise.
func addInto(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}

// attention computes, for n query rows at positions p0..p0+n-1, causal
// grouped-query attention over the first p0+n cached keys/values.
// q and out are [n][heads][headDim]; kc and vc are [tokens][kvHeads][headDim].
// For each (row, head) the scores, softmax and weighted value sum run over
// keys in increasing position, so the result does not depend on n or p0
// beyond the query's own position.
func attention(out, q, kc, vc []float32, p0, n, heads, kvHeads, headDim int) {
	group := heads / kvHeads
	kvDim := kvHeads * headDim
	scale := float32(1 / math.Sqrt(float64(headDim)))
	tasks := n * heads
	// A few tasks per chunk keeps goroutine handoff cheap.
	per := max(1, tasks/(8*4))
	chunks := (tasks + per - 1) / per
	parallel(chunks, func(c int) {
		scores := make([]float32, p0+n)
		acc := make([]float32, headDim)
		for task := c * per; task < min(tasks, (c+1)*per); task++ {
			t, h := task/heads, task%heads
			keys := p0 + t + 1
			qh := q[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			off := (h / group) * headDim
			s := scores[:keys]
			j := 0
			for ; j+4 <= keys; j += 4 {
				b := j*kvDim + off
				s0, s1, s2, s3 := dot4(qh, kc[b:b+headDim], kc[b+kvDim:b+kvDim+headDim],
					kc[b+2*kvDim:b+2*kvDim+headDim], kc[b+3*kvDim:b+3*kvDim+headDim])
				s[j], s[j+1], s[j+2], s[j+3] = s0*scale, s1*scale, s2*scale, s3*scale
			}
			for ; j < keys; j++ {
				s[j] = dot(qh, kc[j*kvDim+off:j*kvDim+off+headDim]) * scale
			}
			m := s[0]
			for _, v := range s {
				m = max(m, v)
			}
			var sum float64
			for j, v := range s {
				e := float32(math.Exp(float64(v - m)))
				s[j] = e
				sum += float64(e)
			}
			clear(acc)
			for j, e := range s {
				vj := vc[j*kvDim+off : j*kvDim+off+headDim]
				for d, v := range vj {
					acc[d] += float32(e * v)
				}
			}
			inv := float32(1 / sum)
			o := out[(t*heads+h)*headDim : (t*heads+h+1)*headDim]
			for d := range o {
				o[d] = acc[d] * inv
			}
		}
	})
}

// dot4 returns dot(q, k0) ... dot(q, k3), each with exactly dot's reduction
// order; running the four chains together only adds instruction-level
// parallelism.
func dot4(q, k0, k1, k2, k3 []float32) (s0, s1, s2, s3 float32) {
	k0, k1, k2, k3 = k0[:len(q)], k1[:len(q)], k2[:len(q)], k3[:len(q)]
	for i, a := range q {
		s0 += float32(a * k0[i])
		s1 += float32(a * k1[i])
		s2 += float32(a * k2[i])
		s3 += float32(a * k3[i])
	}
	return
}
