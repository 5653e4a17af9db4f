package model

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// TestFMA32 checks the portable fused multiply-add against exact rational
// arithmetic, on random operands and on constructed ties where rounding
// through float64 twice would be wrong.
func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	exact := func(a, b, c float32) float32 {
		p := new(big.Float).SetPrec(200).Mul(big.NewFloat(float64(a)), big.NewFloat(float64(b)))
		p.Add(p, new(big.Float).SetPrec(200).SetFloat64(float64(c)))
		f, _ := p.Float32()
		return f
	}
	check := func(a, b, c float32) {
		t.Helper()
		if got, want := fma32(a, b, c), exact(a, b, c); math.Float32bits(got) != math.Float32bits(want) && !(got == 0 && want == 0) {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
		}
	}
	for range 20000 {
		a := float32(r.NormFloat64())
		b := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-20)))
		c := float32(r.NormFloat64() * math.Pow(2, float64(r.IntN(40)-20)))
		check(a, b, c)
	}
	// a*b = 1 + 2^-24 + 2^-48 (just above the midpoint of 1 and its
	// successor); c = -2^-80 keeps the float64 sum on the midpoint.
	a := float32(1 + 1.0/(1<<24))
	check(a, a, 0)
	check(a, a, -float32(math.Ldexp(1, -80)))
	check(a, a, float32(math.Ldexp(1, -80)))
	check(1, 1, float32(math.Ldexp(1, -24)))
	check(-a, a, float32(math.Ldexp(1, -80)))
}

// encodeWeight encodes float32 rows as typ.
func encodeWeight(t testing.TB, typ gguf.TensorType, rows, cols int, data []float32) *weight {
	t.Helper()
	if typ == gguf.F32 {
		return f32Weight(rows, cols, data)
	}
	var raw []byte
	switch typ {
	case gguf.Q4_K, gguf.Q6_K:
		// No encoder: random quants with small, finite scales.
		bs, dOff := 144, []int{0, 2}
		if typ == gguf.Q6_K {
			bs, dOff = 210, []int{208}
		}
		r := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
		raw = make([]byte, rows*cols/256*bs)
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		for b := 0; b < len(raw); b += bs {
			for _, o := range dOff {
				raw[b+o], raw[b+o+1] = byte(r.Uint32()), 0x20
			}
		}
	default:
		var err error
		if raw, err = gguf.Quantize(typ, data); err != nil {
			t.Fatal(err)
		}
	}
	w, err := rawWeight(typ, rows, cols, raw)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// TestKernelsAgree runs every kernel set this CPU supports against the
// portable one on awkward shapes and every in-place weight type: the bits
// must be identical, and each row computed alone must equal the batch.
func TestKernelsAgree(t *testing.T) {
	sets := kernelSets()
	t.Logf("kernel sets: %v (active %s)", setNames(sets), active.name)
	r := rand.New(rand.NewPCG(5, 6))
	type shape struct{ n, k, m int }
	shapes := []shape{{1, 16, 4}, {3, 37, 5}, {4, 64, 8}, {5, 96, 9}, {9, 128, 13}, {8, 256, 12}, {2, 512, 7}, {6, 768, 10}}
	for _, typ := range []gguf.TensorType{gguf.F32, gguf.F16, gguf.BF16, gguf.Q8_0, gguf.Q4_0, gguf.Q4_K, gguf.Q6_K} {
		for _, sh := range shapes {
			elems := map[gguf.TensorType]int{gguf.Q8_0: 32, gguf.Q4_0: 32, gguf.Q4_K: 256, gguf.Q6_K: 256}[typ]
			if elems > 0 && sh.k%elems != 0 {
				continue
			}
			t.Run(fmt.Sprintf("%v/%dx%dx%d", typ, sh.n, sh.k, sh.m), func(t *testing.T) {
				x := randSlice(r, sh.n*sh.k)
				w := encodeWeight(t, typ, sh.m, sh.k, randSlice(r, sh.m*sh.k))
				want := make([]float32, sh.n*sh.m)
				portable.matmul(want, x, w, sh.n)
				for _, ks := range sets {
					got := make([]float32, sh.n*sh.m)
					ks.matmul(got, x, w, sh.n)
					if i, ok := sameBits(got, want); !ok {
						t.Fatalf("%s: element %d = %v, portable %v", ks.name, i, got[i], want[i])
					}
					for row := range sh.n {
						one := make([]float32, sh.m)
						ks.matmul(one, x[row*sh.k:(row+1)*sh.k], w, 1)
						if i, ok := sameBits(one, want[row*sh.m:(row+1)*sh.m]); !ok {
							t.Fatalf("%s: row %d alone differs at column %d", ks.name, row, i)
						}
					}
				}
			})
		}
	}
}

func setNames(sets []*kernels) []string {
	var s []string
	for _, k := range sets {
		s = append(s, k.name)
	}
	return s
}

// TestMatmulAccuracy compares each weight type's matmul with a float64
// product of the activations and the dequantized weights: F32 and F16 are
// float32-accurate, Q8_0 within the error of quantizing the activations.
func TestMatmulAccuracy(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	n, k, m := 3, 512, 16
	for _, tc := range []struct {
		typ gguf.TensorType
		tol float64 // relative to sum |x||w|
	}{{gguf.F32, 1e-6}, {gguf.F16, 1e-6}, {gguf.Q8_0, 1e-2}, {gguf.Q4_K, 1e-6}} {
		x := randSlice(r, n*k)
		w := encodeWeight(t, tc.typ, m, k, randSlice(r, m*k))
		wv := w.values()
		got := make([]float32, n*m)
		matmul(got, x, w, n)
		for i := range n {
			for o := range m {
				var ref, mag float64
				for j := range k {
					ref += float64(x[i*k+j]) * float64(wv[o*k+j])
					mag += math.Abs(float64(x[i*k+j]) * float64(wv[o*k+j]))
				}
				if d := math.Abs(float64(got[i*m+o]) - ref); d > tc.tol*mag {
					t.Fatalf("%v: out[%d][%d] = %v, want %v (error %.3g of %.3g)", tc.typ, i, o, got[i*m+o], ref, d, mag)
				}
			}
		}
	}
}

// TestLoadInPlace checks that Load keeps F16 and Q8_0 matrices in their
// file encoding, inside the loaded file (the private copy or, with
// MapFile, the mapping), and that F16 in place gives the bits of the same
// weights dequantized to float32 on the heap (FromGGUF).
func TestLoadInPlace(t *testing.T) {
	m := tinyModel(t, nil)
	for _, tc := range []struct {
		typ  gguf.TensorType
		mmap bool
	}{{gguf.F16, false}, {gguf.Q8_0, false}, {gguf.F16, true}, {gguf.Q8_0, true}} {
		typ := tc.typ
		path := writeModel(t, m, typ, m.tensors())
		mapped, err := Load(context.Background(), path, LoadOptions{MapFile: tc.mmap})
		if err != nil {
			t.Fatal(err)
		}
		if !tc.mmap && runtime.GOOS == "linux" {
			if p := uintptr(unsafe.Pointer(&mapped.mapping[0])); p%hugePage != 0 {
				t.Errorf("%v: private copy at %#x, not 2 MiB aligned", typ, p)
			}
		}
		if !writeFaults(mapped.mapping) {
			t.Errorf("%v (MapFile %v): the weights' memory is writable", typ, tc.mmap)
		}
		w := mapped.layers[0].wq
		if w.typ != typ || len(w.raw) == 0 || mapped.mapping == nil {
			t.Fatalf("%v: wq has type %v, %d raw bytes, mapping %d bytes", typ, w.typ, len(w.raw), len(mapped.mapping))
		}
		lo := uintptr(unsafe.Pointer(&mapped.mapping[0]))
		if p := uintptr(unsafe.Pointer(&w.raw[0])); p < lo || p >= lo+uintptr(len(mapped.mapping)) {
			t.Fatalf("%v: weights are not in the mapping", typ)
		}
		f, err := gguf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		heap, err := FromGGUF(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if heap.layers[0].wq.typ != gguf.F32 || heap.WeightsDigest() != mapped.WeightsDigest() {
			t.Fatalf("%v: heap copy type %v, digests equal %v", typ, heap.layers[0].wq.typ, heap.WeightsDigest() == mapped.WeightsDigest())
		}
		a, b := prefill(t, mapped.NewSequence(4), prompt(20)), prefill(t, heap.NewSequence(4), prompt(20))
		_, same := sameBits(a, b)
		if typ == gguf.F16 && !same {
			t.Fatal("F16 in place differs from its float32 copy")
		}
	}
}

// writeFaults reports whether writing b's first byte faults (read-only
// memory), turning the fault into a recovered panic.
func writeFaults(b []byte) (faulted bool) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() { faulted = recover() != nil }()
	// A plain store (an atomic one would fault inside the race
	// detector's C code, which cannot recover); undone if it succeeds.
	p := (*byte)(unsafe.Pointer(unsafe.SliceData(b)))
	v := *p
	*p = v ^ 0xff
	*p = v
	return false
}

// TestParallel checks that parallel runs every item exactly once, with
// concurrent and nested callers, and that its helpers exit once idle.
func TestParallel(t *testing.T) {
	for _, tc := range []struct{ n, callers int }{{0, 1}, {1, 1}, {2, 1}, {7, 3}, {1000, 8}} {
		t.Run(fmt.Sprintf("n=%d/callers=%d", tc.n, tc.callers), func(t *testing.T) {
			counts := make([][]atomic.Int32, tc.callers)
			var wg sync.WaitGroup
			for c := range tc.callers {
				counts[c] = make([]atomic.Int32, tc.n)
				wg.Add(1)
				go func() {
					defer wg.Done()
					parallel(tc.n, func(i int) {
						counts[c][i].Add(1)
						if i%100 == 0 { // nested call
							var inner atomic.Int32
							parallel(3, func(int) { inner.Add(1) })
							if inner.Load() != 3 {
								t.Errorf("nested parallel ran %d of 3 items", inner.Load())
							}
						}
					})
				}()
			}
			wg.Wait()
			for c := range counts {
				for i := range counts[c] {
					if got := counts[c][i].Load(); got != 1 {
						t.Fatalf("caller %d item %d ran %d times", c, i, got)
					}
				}
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for helpersAlive.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d helpers still alive 10s after the last job", helpersAlive.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestQuantizeQ8Kernels checks every kernel set's activation quantizer
// against the portable one: random rows, zero blocks, exact halves (which
// round away from zero), subnormals, huge values, NaN and infinities.
func TestQuantizeQ8Kernels(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	block := func(f func(i int) float32) []float32 {
		b := make([]float32, q8Elems)
		for i := range b {
			b[i] = f(i)
		}
		return b
	}
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	rows := map[string][]float32{
		"random": randSlice(r, 8*q8Elems),
		"zeros":  append(block(func(int) float32 { return 0 }), randSlice(r, q8Elems)...),
		// amax 127 gives id 1: the halves are the values themselves.
		"halves": block(func(i int) float32 {
			if i == 0 {
				return 127
			}
			return float32(i-16) + 0.5
		}),
		"negzero":   block(func(i int) float32 { return float32(math.Copysign(0, -1)) * float32(i) }),
		"subnormal": block(func(i int) float32 { return math.Float32frombits(uint32(i+1)) * float32(1-2*(i%2)) }),
		"huge":      block(func(i int) float32 { return float32(i-16) * 1e37 }),
		"nan":       append(randSlice(r, q8Elems), block(func(i int) float32 { return []float32{1, nan}[i%2] })...),
		"inf":       append(block(func(i int) float32 { return []float32{1, -inf}[i%2] }), randSlice(r, q8Elems)...),
	}
	for name, x := range rows {
		wq, wd := make([]int8, len(x)), make([]float32, len(x)/q8Elems)
		quantizeQ8(wq, wd, x)
		for _, ks := range kernelSets() {
			q, d := make([]int8, len(x)), make([]float32, len(x)/q8Elems)
			ks.quantizeQ8(q, d, x)
			if !slices.Equal(q, wq) {
				t.Fatalf("%s/%s: q = %v, portable %v", name, ks.name, q, wq)
			}
			if i, ok := sameBits(d, wd); !ok {
				t.Fatalf("%s/%s: d[%d] = %v, portable %v", name, ks.name, i, d[i], wd[i])
			}
		}
	}
}
