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
func swiglu(g, u []float32) { active.swiglu(g, u) }

func (ks *kernels) swiglu(g, u []float32) {
	u = u[:len(g)]
	var e [256]float32
	for i0 := 0; i0 < len(g); i0 += len(e) {
		gs := g[i0:min(len(g), i0+len(e))]
		es := e[:len(gs)]
		ks.expAffine(es, gs, -1, 0) // exp32(-v)
		for i, v := range gs {
			gs[i] = v / (1 + es[i]) * u[i0+i]
		}
	}
}

// exp32 is e^x in float32 (Cephes expf: x = k ln2 + r, |r| <= ln2/2, a
// degree-7 polynomial in r, within about 1 ulp). Results below the
// smallest normal float32 flush to zero. Every product is rounded
// explicitly, so no build fuses them and the bits are the same everywhere.
func exp32(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -87.33654:
		return 0
	}
	kf := float32(x * 1.44269504088896341)
	if kf < 0 {
		kf -= 0.5
	} else {
		kf += 0.5
	}
	k := int32(kf)
	fk := float32(k)
	r := x - float32(fk*0.693359375)
	r -= float32(fk * -2.12194440e-4)
	p := float32(1.9875691500e-4)
	p = float32(p*r) + 1.3981999507e-3
	p = float32(p*r) + 8.3334519073e-3
	p = float32(p*r) + 4.1665795894e-2
	p = float32(p*r) + 1.6666665459e-1
	p = float32(p*r) + 5.0000001201e-1
	y := float32(p*float32(r*r)) + r + 1
	if k > 127 {
		return y * 2 * math.Float32frombits(uint32(k+126)<<23)
	}
	return y * math.Float32frombits(uint32(k+127)<<23)
}

// addInto does x += y elementwise.
func addInto(x, y []float32) {
	y = y[:len(x)]
	for i := range x {
		x[i] += y[i]
	}
}
