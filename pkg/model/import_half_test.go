package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

// randHalfWords returns n random finite f16 words (every class: zeros,
// subnormals, normals up to ±65504), little-endian.
func randHalfWords(r *rand.Rand, n int) []byte {
	b := make([]byte, 2*n)
	for i := range n {
		w := uint16(r.Uint32())
		for w&0x7c00 == 0x7c00 {
			w = uint16(r.Uint32())
		}
		binary.LittleEndian.PutUint16(b[2*i:], w)
	}
	return b
}

func halfWordsToF32(b []byte) []float32 {
	f := make([]float32, len(b)/2)
	for i := range f {
		f[i] = half.ToFloat32(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return f
}

// withKernels runs fn with ks as the active kernel set.
func withKernels(ks *kernels, fn func()) {
	old := active
	active = ks
	defer func() { active = old }()
	fn()
}

// halfTo gives the exact value of every finite word on every kernel set,
// and reports a non-finite word wherever it sits (vector body or tail).
func TestHalfToKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	all := make([]byte, 2<<16)
	for w := range 1 << 16 {
		binary.LittleEndian.PutUint16(all[2*w:], uint16(w))
	}
	for _, ks := range kernelSets() {
		// Every word, at even and odd offsets (tails of each length).
		for _, off := range []int{0, 1, 5, 15} {
			src := all[2*off:]
			got := make([]float32, len(src)/2)
			finite := ks.halfTo(got, src)
			if finite {
				t.Fatalf("%s: all words reported finite", ks.name)
			}
			for i := range got {
				w := binary.LittleEndian.Uint16(src[2*i:])
				if w&0x7c00 == 0x7c00 {
					continue // not imported: its value does not matter
				}
				if want := half.ToFloat32(w); math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%s: word %#04x -> %v, want %v", ks.name, w, got[i], want)
				}
			}
		}
		for _, n := range []int{1, 15, 16, 17, 31, 32, 33, 100} {
			src := randHalfWords(r, n)
			if !ks.halfTo(make([]float32, n), src) {
				t.Fatalf("%s: n=%d finite words reported not", ks.name, n)
			}
			for pos := range n {
				for _, bad := range []uint16{0x7c00, 0xfc00, 0x7e00, 0x7c01, 0xffff} {
					b := append([]byte(nil), src...)
					binary.LittleEndian.PutUint16(b[2*pos:], bad)
					if ks.halfTo(make([]float32, n), b) {
						t.Fatalf("%s: n=%d, %#04x at %d reported finite", ks.name, n, bad, pos)
					}
				}
			}
		}
	}
}

// ImportBlockHalf gives the bits ImportBlock gives for the same values
// decoded to float32, on every kernel set, for models whose KV rows are
// and are not a multiple of the vector width.
func TestImportBlockHalfMatchesImportBlock(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for _, mut := range []func(*Config){nil, func(c *Config) { c.HeadDim, c.Dim = 6, 24 }, func(c *Config) { c.CLA = true }} {
		m := tinyModel(t, mut)
		for _, ks := range kernelSets() {
			t.Run(fmt.Sprintf("%s/kvdim%d", ks.name, m.cfg.KVDim()), func(t *testing.T) {
				withKernels(ks, func() {
					const B, blocks = 4, 5
					a, b := m.NewSequence(B), m.NewSequence(B)
					for i := range blocks {
						kh := randHalfWords(r, a.BlockLen())
						vh := randHalfWords(r, a.BlockLen())
						if err := a.ImportBlock(i, halfWordsToF32(kh), halfWordsToF32(vh)); err != nil {
							t.Fatal(err)
						}
						if err := b.ImportBlockHalf(i, kh, vh); err != nil {
							t.Fatal(err)
						}
					}
					if a.Len() != b.Len() {
						t.Fatalf("Len %d, want %d", b.Len(), a.Len())
					}
					for l := range a.k {
						if i, ok := sameBits(b.k[l], a.k[l]); !ok {
							t.Fatalf("layer %d K differs at %d", l, i)
						}
						if i, ok := sameBits(b.v[l], a.v[l]); !ok {
							t.Fatalf("layer %d V differs at %d", l, i)
						}
					}
					// And the logits after it agree.
					la, lb := prefill(t, a, prompt(3)), prefill(t, b, prompt(3))
					if i, ok := sameBits(lb, la); !ok {
						t.Fatalf("logits differ at %d", i)
					}
				})
			})
		}
	}
}

// A block holding an infinity or a NaN word, anywhere, is refused whole:
// the sequence is left as it was and the same position imports fine
// afterwards. Wrong lengths and positions are refused too.
func TestImportBlockHalfRefuses(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	m := tinyModel(t, nil)
	for _, ks := range kernelSets() {
		withKernels(ks, func() {
			s := m.NewSequence(4)
			bl := s.BlockLen()
			if err := s.ImportBlockHalf(0, randHalfWords(r, bl), randHalfWords(r, bl)); err != nil {
				t.Fatal(err)
			}
			for _, pos := range []int{0, 1, bl / 2, bl - 1, bl, bl + 17, 2*bl - 1} {
				for _, bad := range []uint16{0x7c00, 0xfc00, 0x7e00, 0xfe01} {
					k, v := randHalfWords(r, bl), randHalfWords(r, bl)
					// pos < bl damages K, else V; the last layer's
					// positions come after earlier layers were appended.
					if pos < bl {
						binary.LittleEndian.PutUint16(k[2*pos:], bad)
					} else {
						binary.LittleEndian.PutUint16(v[2*(pos-bl):], bad)
					}
					if err := s.ImportBlockHalf(1, k, v); !errors.Is(err, ErrBadBlock) {
						t.Fatalf("%s: %#04x at %d: %v, want ErrBadBlock", ks.name, bad, pos, err)
					}
					for l := range s.k {
						if s.Len() != 4 || len(s.k[l]) != 4*m.cfg.KVDim() || len(s.v[l]) != 4*m.cfg.KVDim() {
							t.Fatalf("%s: refused import left Len %d, layer %d KV %d/%d", ks.name, s.Len(), l, len(s.k[l]), len(s.v[l]))
						}
					}
				}
			}
			good := randHalfWords(r, bl)
			for _, c := range []struct {
				i    int
				k, v []byte
			}{
				{1, good[:len(good)-2], good}, {1, good, good[:len(good)-1]}, {1, append(good, 0, 0), good},
				{1, nil, nil}, {0, good, good}, {2, good, good}, {-1, good, good},
			} {
				if err := s.ImportBlockHalf(c.i, c.k, c.v); !errors.Is(err, ErrBadBlock) {
					t.Fatalf("%s: block %d of %d/%d bytes: %v, want ErrBadBlock", ks.name, c.i, len(c.k), len(c.v), err)
				}
			}
			if err := s.ImportBlockHalf(1, good, good); err != nil || s.Len() != 8 {
				t.Fatalf("%s: import after refusals: %v, Len %d", ks.name, err, s.Len())
			}
		})
	}
}

// toHalf writes half.FromFloat32Sat of every value on every kernel set:
// every f16 value exactly, and values that are not finite f16s (beyond
// ±65504, infinities, NaN) saturated, wherever they sit.
func TestToHalfKernels(t *testing.T) {
	var vals []float32
	for w := range 1 << 16 {
		if f := half.ToFloat32(uint16(w)); f == f && !math.IsInf(float64(f), 0) {
			// The value, the tie above it and a value just above that.
			b := math.Float32bits(f)
			vals = append(vals, f, math.Float32frombits(b+0x1000), math.Float32frombits(b+0x1001))
		}
	}
	for _, ks := range kernelSets() {
		for _, off := range []int{0, 3} {
			src := vals[off:]
			got := make([]byte, 2*len(src))
			ks.toHalf(got, src)
			for i, f := range src {
				if w, want := binary.LittleEndian.Uint16(got[2*i:]), half.FromFloat32Sat(f); w != want {
					t.Fatalf("%s: %v -> %#04x, want %#04x", ks.name, f, w, want)
				}
			}
		}
		for _, n := range []int{1, 7, 8, 9, 17} {
			for pos := range n {
				for _, bad := range []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 65520, -1e9} {
					src := make([]float32, n)
					for i := range src {
						src[i] = float32(i) - 3.5
					}
					src[pos] = bad
					got := make([]byte, 2*n)
					ks.toHalf(got, src)
					for i, f := range src {
						if w, want := binary.LittleEndian.Uint16(got[2*i:]), half.FromFloat32Sat(f); w != want {
							t.Fatalf("%s: n=%d %v at %d: word %d = %#04x, want %#04x", ks.name, n, bad, pos, i, w, want)
						}
					}
				}
			}
		}
	}
}

// ExportBlockHalf writes the f16 words of what ExportBlock exports, and
// ImportBlockHalf of them restores the same KV.
func TestExportBlockHalf(t *testing.T) {
	for _, mut := range []func(*Config){nil, func(c *Config) { c.HeadDim, c.Dim = 6, 24 }} {
		m := tinyModel(t, mut)
		for _, ks := range kernelSets() {
			withKernels(ks, func() {
				const B = 4
				s := m.NewSequence(B)
				prefill(t, s, prompt(13))
				s.v[0][5] = float32(math.Inf(-1)) // computed beyond f16: saturates
				bl := s.BlockLen()
				kf, vf := make([]float32, bl), make([]float32, bl)
				kh, vh := make([]byte, 2*bl), make([]byte, 2*bl)
				back := m.NewSequence(B)
				for i := range s.FullBlocks() {
					if err := s.ExportBlock(i, kf, vf); err != nil {
						t.Fatal(err)
					}
					if err := s.ExportBlockHalf(i, kh, vh); err != nil {
						t.Fatal(err)
					}
					for j := range kf {
						if w := binary.LittleEndian.Uint16(kh[2*j:]); w != half.FromFloat32Sat(kf[j]) {
							t.Fatalf("%s block %d: K word %d = %#04x, want that of %v", ks.name, i, j, w, kf[j])
						}
						if w := binary.LittleEndian.Uint16(vh[2*j:]); w != half.FromFloat32Sat(vf[j]) {
							t.Fatalf("%s block %d: V word %d = %#04x, want that of %v", ks.name, i, j, w, vf[j])
						}
					}
					if err := back.ImportBlockHalf(i, kh, vh); err != nil {
						t.Fatal(err)
					}
				}
				s.v[0][5] = -65504
				for l := range back.k {
					if i, ok := sameBits(back.k[l], s.k[l][:len(back.k[l])]); !ok {
						t.Fatalf("%s: layer %d K round trip differs at %d", ks.name, l, i)
					}
					if i, ok := sameBits(back.v[l], s.v[l][:len(back.v[l])]); !ok {
						t.Fatalf("%s: layer %d V round trip differs at %d", ks.name, l, i)
					}
				}
				for _, c := range []struct {
					i    int
					k, v []byte
				}{{3, kh, vh}, {-1, kh, vh}, {0, kh[:len(kh)-2], vh}, {0, kh, nil}} {
					if err := s.ExportBlockHalf(c.i, c.k, c.v); !errors.Is(err, ErrBadBlock) {
						t.Fatalf("%s: export of block %d into %d/%d bytes: %v", ks.name, c.i, len(c.k), len(c.v), err)
					}
				}
			})
		}
	}
}
