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
