package kvblock

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
)

// Adversarial inputs, all f16-representable as the worker supplies them.
var patterns = []struct {
	name string
	gen  func(rng *rand.Rand, i int) float32
}{
	{"normal", func(r *rand.Rand, i int) float32 { return float32(r.NormFloat64()) }},
	{"zeros", func(r *rand.Rand, i int) float32 { return 0 }},
	{"all-equal", func(r *rand.Rand, i int) float32 { return 3.14159 }},
	{"outlier", func(r *rand.Rand, i int) float32 {
		if i%97 == 5 {
			return 3000
		}
		return float32(r.NormFloat64())
	}},
	{"tiny", func(r *rand.Rand, i int) float32 { return float32(r.NormFloat64()) * 1e-6 }},
	{"alternating", func(r *rand.Rand, i int) float32 {
		if i%2 == 0 {
			return 1
		}
		return -1
	}},
	{"near-saturation", func(r *rand.Rand, i int) float32 { return float32(65504 - r.Float64()*2000*float64(i%3)) }},
	{"negative", func(r *rand.Rand, i int) float32 { return -float32(r.ExpFloat64()) - 100 }},
}

func genKV(s Shape, seed uint64, gen func(*rand.Rand, int) float32) *KV {
	rng := rand.New(rand.NewPCG(seed, 7))
	n := s.Elements()
	kv := &KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
	for i := range n {
		kv.K[i] = RoundF16(gen(rng, i))
		kv.V[i] = RoundF16(gen(rng, i+1))
	}
	return kv
}

// Shapes cover multiples of the groups, ragged tails and odd head dims.
var testShapes = []Shape{
	{Tokens: 64, Layers: 2, KVHeads: 2, HeadDim: 64},
	{Tokens: 45, Layers: 1, KVHeads: 3, HeadDim: 40},
	{Tokens: 5, Layers: 2, KVHeads: 1, HeadDim: 7},
	{Tokens: 1, Layers: 1, KVHeads: 1, HeadDim: 1},
}

func ulp32(x float32) float32 {
	x = float32(math.Abs(float64(x)))
	return math.Float32frombits(math.Float32bits(x)+1) - x
}

func TestRoundTripBounds(t *testing.T) {
	for _, c := range Codecs() {
		for _, s := range testShapes {
			for _, p := range patterns {
				for _, start := range []uint32{0, 2, 1000} {
					kv := genKV(s, uint64(start)+11, p.gen)
					m := Meta{Codec: c, StartPos: start, Sinks: -1}
					blk, err := Encode(nil, kv, m)
					if err != nil {
						t.Fatal(err)
					}
					if len(blk) != EncodedSize(c, s, SinkTokensInBlock(c.DefaultSinks(), start, s.Tokens)) {
						t.Fatalf("%v %+v: EncodedSize mismatch", c, s)
					}
					var out KV
					h, err := Decode(blk, &out)
					if err != nil {
						t.Fatal(err)
					}
					if out.Shape != s {
						t.Fatalf("shape %+v", out.Shape)
					}
					L := h.layout()
					pl := blk[HeaderSize:]
					name := c.String() + "/" + p.name
					checkTensor(t, name+"/K", &L, pl, kv.K, out.K, true)
					checkTensor(t, name+"/V", &L, pl, kv.V, out.V, false)
				}
			}
		}
	}
}

// checkTensor asserts the documented per-element bound of the codec.
func checkTensor(t *testing.T, name string, L *layout, pl []byte, x, y []float32, key bool) {
	t.Helper()
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	var params []byte
	if key {
		a, b := L.kParams()
		params = pl[a:b]
	} else {
		a, b := L.vParams()
		params = pl[a:b]
	}
	f16 := func(o int) float32 { return F16ToFloat32(binary.LittleEndian.Uint16(params[o:])) }
	fails := 0
	for l := 0; l < L.s.Layers; l++ {
		for tk := 0; tk < T; tk++ {
			for h := 0; h < H; h++ {
				r := (l*T+tk)*H + h
				row, got := x[r*D:(r+1)*D], y[r*D:(r+1)*D]
				for d := range D {
					want, g := row[d], got[d]
					ok := true
					var bound float32
					switch {
					case tk < L.nSink || L.codec == F16:
						ok = math.Float32bits(g) == math.Float32bits(RoundF16(want)) || (want == 0 && g == 0)
					case L.codec == BF16:
						ok = g == RoundBF16(want)
					case L.codec == FP8E4M3:
						s := math.Float32frombits(binary.LittleEndian.Uint32(params[4*(l*H+h):]))
						a := float32(math.Abs(float64(want)))
						// Normal fp8 range: relative 2^-4; subnormal: absolute half step.
						bound = max(a/16, s/1024) * (1 + 1e-5)
						if a > 448*s*(1+1e-6) {
							t.Fatalf("%s: value beyond amax", name)
						}
					case L.codec == Int8:
						s := f16(2 * r)
						amax := float32(0)
						for _, v := range row {
							amax = max(amax, float32(math.Abs(float64(v))))
						}
						// Honest scale bound: absmax/127 rounded up to f16.
						if s > amax/127*(1+1.0/1024)+1.0/(1<<24) {
							t.Fatalf("%s: scale %g too large for absmax %g", name, s, amax)
						}
						bound = s/2 + 2*ulp32(amax)
					default: // KIVI
						qmax := float32(int(1)<<L.codec.kivi() - 1)
						var s, z, mn, mx float32
						if key {
							g := tk / L.kg
							G := ceilDiv(T, L.kg)
							o := (((l*G+g)*H)+h)*D*4 + 4*d
							s, z = f16(o), f16(o+2)
							mn, mx = float32(math.Inf(1)), float32(math.Inf(-1))
							for t2 := max(g*L.kg, L.nSink); t2 < min(T, (g+1)*L.kg); t2++ {
								v := x[((l*T+t2)*H+h)*D+d]
								mn, mx = min(mn, v), max(mx, v)
							}
						} else {
							j := d / L.vg
							o := (r*ceilDiv(D, L.vg) + j) * 4
							s, z = f16(o), f16(o+2)
							mn, mx = float32(math.Inf(1)), float32(math.Inf(-1))
							for _, v := range row[j*L.vg : min(D, (j+1)*L.vg)] {
								mn, mx = min(mn, v), max(mx, v)
							}
						}
						// zero is min rounded down to f16 (within one f16 ulp),
						// scale (max-zero)/qmax rounded up to f16.
						zslack := mn - z
						if zslack < 0 || zslack > max(ulp16(mn), 1.0/(1<<24)) {
							t.Fatalf("%s: zero %g for min %g", name, z, mn)
						}
						if s > (mx-mn+zslack)/qmax*(1+1.0/1024)+1.0/(1<<24) {
							t.Fatalf("%s: scale %g for range [%g,%g]", name, s, mn, mx)
						}
						bound = s/2 + 4*ulp32(max(float32(math.Abs(float64(mn))), float32(math.Abs(float64(mx)))))
					}
					if bound > 0 || L.codec == FP8E4M3 {
						ok = float32(math.Abs(float64(g-want))) <= bound
					}
					if !ok {
						fails++
						if fails < 5 {
							t.Errorf("%s: (l%d t%d h%d d%d) got %g want %g bound %g", name, l, tk, h, d, g, want, bound)
						}
					}
				}
			}
		}
	}
}

// ulp16 is the f16 spacing at x.
func ulp16(x float32) float32 {
	h := F16Bits(float32(math.Abs(float64(x))))
	return F16ToFloat32(h+1) - F16ToFloat32(h)
}

func TestFP8Saturates(t *testing.T) {
	for _, x := range []float32{448, 449, 464, 500, 1e6} {
		if got := e4m3Table[e4m3(x)]; got != 448 {
			t.Errorf("e4m3(%g) = %g", x, got)
		}
		if got := e4m3Table[e4m3(-x)]; got != -448 {
			t.Errorf("e4m3(%g) = %g", -x, got)
		}
	}
	// Every finite code round-trips, and RNE picks the even neighbour.
	for c := 0; c < 256; c++ {
		v := e4m3Table[c]
		if v != v {
			continue
		}
		if got := e4m3(v); e4m3Table[got] != v {
			t.Errorf("code %#x (%g) -> %#x", c, v, got)
		}
	}
	if got := e4m3Table[e4m3(1.0625)]; got != 1 { // halfway 1 and 1.125 -> even (1)
		t.Errorf("tie: %g", got)
	}
	if got := e4m3Table[e4m3(1.1875)]; got != 1.25 { // halfway 1.125 and 1.25 -> even (1.25)
		t.Errorf("tie: %g", got)
	}
}

func TestF16Exhaustive(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToFloat32(uint16(h))
		if f != f {
			if got := F16Bits(f); got&0x7c00 != 0x7c00 || got&0x3ff == 0 {
				t.Fatalf("NaN %#x -> %#x", h, got)
			}
			continue
		}
		if got := F16Bits(f); got != uint16(h) {
			t.Fatalf("%#04x -> %g -> %#04x", h, f, got)
		}
		// Midpoint to the next value rounds to even.
		if h&0x7fff < 0x7bff {
			next := F16ToFloat32(uint16(h) + 1)
			mid := (float64(f) + float64(next)) / 2
			want := uint16(h)
			if h&1 == 1 {
				want++
			}
			if got := F16Bits(float32(mid)); float32(mid) == float32(float64(mid)) && got != want {
				t.Fatalf("tie %#04x: %#04x want %#04x", h, got, want)
			}
		}
	}
	if F16Bits(70000) != 0x7c00 || half.FromFloat32Sat(70000) != 0x7bff || half.FromFloat32Sat(float32(math.NaN())) != 0 {
		t.Fatal("overflow/NaN handling")
	}
	for _, x := range []float32{1, -2.5, 1e-30, 3.0000002} {
		if BF16ToFloat32(BF16Bits(x)) != RoundBF16(x) {
			t.Fatal("bf16")
		}
	}
}

func TestNonFinite(t *testing.T) {
	s := Shape{Tokens: 40, Layers: 1, KVHeads: 2, HeadDim: 36}
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	for _, c := range Codecs() {
		kv := genKV(s, 3, patterns[0].gen)
		kv.K[100], kv.K[101], kv.K[102], kv.K[103] = nan, inf, -inf, 1e9
		kv.V[200], kv.V[201], kv.V[202] = nan, inf, -1e30
		blk, err := Encode(nil, kv, Meta{Codec: c, Sinks: -1})
		if err != nil {
			t.Fatal(err)
		}
		var out KV
		if _, err := Decode(blk, &out); err != nil {
			t.Fatal(err)
		}
		lim := float32(65504) * 1.01
		if c == BF16 {
			lim = math.MaxFloat32
		}
		for i := range out.K {
			for _, v := range []float32{out.K[i], out.V[i]} {
				if v != v || v > lim || v < -lim {
					t.Fatalf("%v: non-finite or out-of-range output %g at %d", c, v, i)
				}
			}
		}
		// NaN encodes as 0 (within the group's error for lossy codecs).
		if c == F16 || c == BF16 {
			if out.K[100] != 0 || out.K[101] != 65504 && c == F16 || out.K[102] >= 0 {
				t.Errorf("%v: NaN/Inf -> %g %g %g", c, out.K[100], out.K[101], out.K[102])
			}
		}
		t.Logf("%v: NaN->%g +Inf->%g -Inf->%g 1e9->%g", c, out.K[100], out.K[101], out.K[102], out.K[103])
	}
}

func TestSinks(t *testing.T) {
	s := Shape{Tokens: 32, Layers: 2, KVHeads: 2, HeadDim: 32}
	for _, c := range Codecs() {
		kv := genKV(s, 5, patterns[0].gen)
		for i := range s.KVHeads * s.HeadDim { // huge outliers on sink token 0
			kv.K[i] = 5000
			kv.V[i] = -4000
		}
		for _, sinks := range []int{0, 1, 4, 40} {
			blk, err := Encode(nil, kv, Meta{Codec: c, Sinks: sinks, StartPos: 0})
			if err != nil {
				t.Fatal(err)
			}
			var out KV
			h, err := Decode(blk, &out)
			if err != nil {
				t.Fatal(err)
			}
			if h.Sinks != sinks || h.SinkTokens() != min(sinks, s.Tokens) {
				t.Fatalf("sinks %d: header %d/%d", sinks, h.Sinks, h.SinkTokens())
			}
			per := s.Tokens * s.KVHeads * s.HeadDim
			for l := range s.Layers {
				for i := range min(sinks, s.Tokens) * s.KVHeads * s.HeadDim {
					o := l*per + i
					if out.K[o] != kv.K[o] || out.V[o] != kv.V[o] {
						t.Fatalf("%v sinks=%d: sink element %d not exact", c, sinks, o)
					}
				}
			}
		}
	}
}

func TestEncodeReusesBuffer(t *testing.T) {
	kv := randomKV(Shape{Tokens: 8, Layers: 2, KVHeads: 2, HeadDim: 16}, 2)
	for _, c := range Codecs() {
		a, _ := Encode(nil, kv, Meta{Codec: c, Sinks: -1})
		buf := make([]byte, 0, len(a)+100)
		for i := range buf[:cap(buf)] {
			buf[:cap(buf)][i] = 0xAA // stale bytes must all be overwritten
		}
		b, err := Encode(buf, kv, Meta{Codec: c, Sinks: -1})
		if err != nil || &b[0] != &buf[:1][0] || string(a) != string(b) {
			t.Fatalf("%v: reuse failed (err %v)", c, err)
		}
		var out KV
		out.K = make([]float32, 0, 10000)
		p := &out.K[:1][0]
		if _, err := Decode(b, &out); err != nil || &out.K[0] != p {
			t.Fatalf("%v: decode did not reuse capacity", c)
		}
		allocs := testing.AllocsPerRun(5, func() {
			b, _ = Encode(b, kv, Meta{Codec: c, Sinks: -1})
			Decode(b, &out)
		})
		if allocs != 0 {
			t.Errorf("%v: %v allocs per encode+decode", c, allocs)
		}
	}
}

func TestCodecNames(t *testing.T) {
	for i, c := range Codecs() {
		if int(c) != i+1 {
			t.Fatal("ids")
		}
		p, err := ParseCodec(c.String())
		if err != nil || p != c {
			t.Fatal(c)
		}
	}
	if _, err := ParseCodec("int3"); err == nil {
		t.Fatal("int3 accepted")
	}
	if c, _ := ParseCodec("FP8"); c != FP8E4M3 {
		t.Fatal("fp8 alias")
	}
	if Codec(9).String() != "codec(9)" {
		t.Fatal(Codec(9).String())
	}
}

func TestBytesPerToken(t *testing.T) {
	// Llama-3-8B, 64-token blocks: data + params + 1 byte of header.
	// KIVI params are 4 bytes per 32 elements = 1 extra bit per element.
	want := map[Codec]float64{
		F16: 131072 + 1, BF16: 131072 + 1, FP8E4M3: 65536 + 32 + 1,
		Int8: 65536 + 1024 + 1, Int4: 32768 + 8192 + 1, Int2: 16384 + 8192 + 1,
	}
	for _, c := range Codecs() {
		got := BytesPerToken(c, 32, 8, 128)
		t.Logf("%-8v %9.1f bytes/token", c, got)
		if got != want[c] {
			t.Errorf("%v: %v bytes/token", c, got)
		}
	}
}
