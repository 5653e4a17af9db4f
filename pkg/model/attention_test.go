package model

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func TestExp32(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	worst := 0.0
	for range 200000 {
		x := float32(r.Float64()*180 - 90)
		got, want := float64(exp32(x)), math.Exp(float64(x))
		if want < 1.2e-38 {
			if got != 0 && math.Abs(got-want) > 1e-38 {
				t.Fatalf("exp32(%g) = %g, want ~0", x, got)
			}
			continue
		}
		if math.IsInf(want, 0) || want > math.MaxFloat32 {
			if !math.IsInf(got, 1) && math.Abs(got-want)/want > 1e-6 {
				t.Fatalf("exp32(%g) = %g, want %g", x, got, want)
			}
			continue
		}
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Fatalf("exp32 relative error up to %.3g", worst)
	}
	for _, c := range []struct{ x, want float32 }{{0, 1}, {float32(math.Inf(-1)), 0}, {float32(math.Inf(1)), float32(math.Inf(1))}, {-100, 0}} {
		if got := exp32(c.x); got != c.want {
			t.Fatalf("exp32(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if got := exp32(float32(math.NaN())); got == got {
		t.Fatal("exp32(NaN) is not NaN")
	}
}

// TestAttentionKernelsAgree checks every kernel set's attention against the
// portable one, bit for bit, and that computing rows one at a time (as a
// prompt split would) gives the same bits as the whole batch.
func TestAttentionKernelsAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct{ p0, n, heads, kvHeads, hd int }{
		{0, 1, 2, 1, 64}, {0, 7, 4, 2, 64}, {5, 9, 6, 2, 64}, {30, 4, 4, 4, 128}, {3, 6, 4, 2, 16}, {0, 13, 2, 2, 48},
	} {
		t.Run(fmt.Sprintf("%+v", tc), func(t *testing.T) {
			keys := tc.p0 + tc.n
			q := randSlice(r, tc.n*tc.heads*tc.hd)
			kc := randSlice(r, keys*tc.kvHeads*tc.hd)
			vc := randSlice(r, keys*tc.kvHeads*tc.hd)
			want := make([]float32, len(q))
			portable.attention(want, q, kc, vc, tc.p0, tc.n, tc.heads, tc.kvHeads, tc.hd)
			qd := tc.heads * tc.hd
			for _, ks := range kernelSets() {
				got := make([]float32, len(q))
				ks.attention(got, q, kc, vc, tc.p0, tc.n, tc.heads, tc.kvHeads, tc.hd)
				if i, ok := sameBits(got, want); !ok {
					t.Fatalf("%s: element %d = %v, portable %v", ks.name, i, got[i], want[i])
				}
				for row := range tc.n {
					one := make([]float32, qd)
					ks.attention(one, q[row*qd:(row+1)*qd], kc, vc, tc.p0+row, 1, tc.heads, tc.kvHeads, tc.hd)
					if i, ok := sameBits(one, want[row*qd:(row+1)*qd]); !ok {
						t.Fatalf("%s: row %d alone differs at %d", ks.name, row, i)
					}
				}
			}
			// Against a float64 reference.
			for row := range tc.n {
				for h := range tc.heads {
					off := (h / (tc.heads / tc.kvHeads)) * tc.hd
					nk := tc.p0 + row + 1
					sc := make([]float64, nk)
					m := math.Inf(-1)
					for j := range nk {
						for d := range tc.hd {
							sc[j] += float64(q[row*qd+h*tc.hd+d]) * float64(kc[j*tc.kvHeads*tc.hd+off+d])
						}
						sc[j] /= math.Sqrt(float64(tc.hd))
						m = max(m, sc[j])
					}
					var sum float64
					for j := range sc {
						sc[j] = math.Exp(sc[j] - m)
						sum += sc[j]
					}
					for d := range tc.hd {
						var o float64
						for j := range nk {
							o += sc[j] / sum * float64(vc[j*tc.kvHeads*tc.hd+off+d])
						}
						if g := float64(want[row*qd+h*tc.hd+d]); math.Abs(g-o) > 1e-4 {
							t.Fatalf("row %d head %d dim %d: %v, want %v", row, h, d, g, o)
						}
					}
				}
			}
		})
	}
}

// TestExpKernels checks the SIMD exp against exp32, bit for bit, on
// ordinary and extreme inputs, for both affine forms the engine uses.
func TestExpKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	src := make([]float32, 4099)
	for i := range src {
		src[i] = float32(r.Float64()*200 - 100)
	}
	copy(src, []float32{0, float32(math.Copysign(0, -1)), 88.72283, 88.72284, 88.5, -87.33654, -87.33655, 88.3, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e30, -1e30, 0.5, -0.5, 1e-30})
	for _, ks := range kernelSets() {
		for _, ab := range [][2]float32{{1, -3.5}, {-1, 0}, {1, 0}} {
			got := make([]float32, len(src))
			ks.expAffine(got, src, ab[0], ab[1])
			for i, x := range src {
				want := exp32(x*ab[0] + ab[1])
				if math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%s a=%v b=%v: exp(%g) = %g, want %g", ks.name, ab[0], ab[1], x, got[i], want)
				}
			}
		}
	}
}

// TestDecodeAttentionMatchesTiles checks the one-row score kernel (qk1,
// used for decode and short tiles) against the tile path it replaces, bit
// for bit, on every kernel set that has it: grouped heads, head dims that
// are and are not multiples of 16 and 64 (the latter fall back), key
// counts around the 16-key groups, sliding windows, and scores that are
// all zero (the sign of the maximum) or NaN (an infinite key).
func TestDecodeAttentionMatchesTiles(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	type shape struct{ p0, n, heads, kvHeads, hd, window int }
	var shapes []shape
	for _, g := range [][2]int{{12, 4}, {4, 4}, {8, 1}, {6, 2}} {
		for _, hd := range []int{16, 32, 48, 64, 80, 128, 8, 6} {
			for _, p0 := range []int{0, 14, 16, 17, 100} {
				for _, n := range []int{1, 2, 5} {
					shapes = append(shapes, shape{p0, n, g[0], g[1], hd, 0})
				}
			}
		}
	}
	shapes = append(shapes, shape{1023, 1, 12, 4, 64, 0}, shape{1000, 3, 12, 4, 64, 0},
		shape{40, 1, 4, 2, 64, 16}, shape{40, 3, 4, 2, 64, 7}, shape{100, 2, 12, 4, 32, 33}, shape{5, 6, 4, 2, 64, 4})
	for _, ks := range kernelSets() {
		if ks.qk1 == nil {
			continue
		}
		tiles := *ks
		tiles.qk1 = nil
		for _, tc := range shapes {
			keys := tc.p0 + tc.n
			qd, kvd := tc.heads*tc.hd, tc.kvHeads*tc.hd
			kc, vc := randSlice(r, keys*kvd), randSlice(r, keys*kvd)
			for _, special := range []string{"", "zero", "negzero", "inf"} {
				q := randSlice(r, tc.n*qd)
				switch special {
				case "zero":
					clear(q)
				case "negzero":
					for i := range q {
						q[i] = float32(math.Copysign(0, -1))
					}
				case "inf":
					kc2 := append([]float32(nil), kc...)
					kc2[r.IntN(len(kc2))] = float32(math.Inf(1))
					kc = kc2
				}
				want, got := make([]float32, len(q)), make([]float32, len(q))
				withKernels(&tiles, func() {
					attentionWindow(want, q, kc, vc, tc.p0, tc.n, tc.heads, tc.kvHeads, tc.hd, tc.window)
				})
				withKernels(ks, func() {
					attentionWindow(got, q, kc, vc, tc.p0, tc.n, tc.heads, tc.kvHeads, tc.hd, tc.window)
				})
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) && !(got[i] != got[i] && want[i] != want[i]) {
						t.Fatalf("%s %+v %s: element %d = %v, tile path %v", ks.name, tc, special, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// The score kernel's scores and maximum, directly: every key count from 1
// to 40 (groups of 16 and the single-key tail) and head dims 16 to 128.
func TestQK1Scores(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	for _, ks := range kernelSets() {
		if ks.qk1 == nil {
			continue
		}
		for _, hd := range []int{16, 32, 64, 128} {
			for nk := 1; nk <= 40; nk++ {
				const stride = 3 // keys of another head between rows
				q := randSlice(r, hd)
				kc := randSlice(r, nk*stride*hd)
				out := make([]float32, nk+1)
				out[nk] = 42 // must stay
				scale := float32(1 / math.Sqrt(float64(hd)))
				m, ordered := ks.qk1(&q[0], &kc[0], stride*hd, hd/16, nk, scale, &out[0])
				if !ordered {
					t.Fatalf("%s hd %d nk %d: finite scores reported NaN", ks.name, hd, nk)
				}
				wm := float32(math.Inf(-1))
				for j := range nk {
					want := dotF32(q, kc[j*stride*hd:]) * scale
					if math.Float32bits(out[j]) != math.Float32bits(want) {
						t.Fatalf("%s hd %d nk %d: score %d = %v, want %v", ks.name, hd, nk, j, out[j], want)
					}
					wm = max(wm, want)
				}
				if m != wm || out[nk] != 42 {
					t.Fatalf("%s hd %d nk %d: max %v, want %v (guard %v)", ks.name, hd, nk, m, wm, out[nk])
				}
				kc[r.IntN(nk)*stride*hd] = float32(math.NaN())
				if _, ordered := ks.qk1(&q[0], &kc[0], stride*hd, hd/16, nk, scale, &out[0]); ordered {
					t.Fatalf("%s hd %d nk %d: NaN score not reported", ks.name, hd, nk)
				}
			}
		}
	}
}
