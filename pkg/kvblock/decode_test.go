package kvblock

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// edgeF16 are the f16 parameters a hostile or unlucky block can carry:
// zeros, subnormals, the largest finite values, infinities, quiet and
// signalling NaNs with payloads.
var edgeF16 = []uint16{
	0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x3c00, 0xbc00, 0x7bff, 0xfbff,
	0x7c00, 0xfc00, 0x7e00, 0xfe00, 0x7c01, 0xfc01, 0x7d55, 0xffff,
}

// hostileBlock encodes kv with codec c and then overwrites the whole
// payload with random bytes (every byte pattern is a valid int4/int8/f16
// payload), with f16 edge values at some parameter positions, and fixes
// the CRC.
func hostileBlock(t *testing.T, rng *rand.Rand, kv *KV, c Codec, start uint32) []byte {
	t.Helper()
	b, err := Encode(nil, kv, Meta{Codec: c, StartPos: start, Sinks: -1})
	if err != nil {
		t.Fatal(err)
	}
	p := b[HeaderSize:]
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
	for i := 0; i+2 <= len(p); i += 2 {
		if rng.IntN(4) == 0 {
			binary.LittleEndian.PutUint16(p[i:], edgeF16[rng.IntN(len(edgeF16))])
		}
	}
	return refreshCRC(b)
}

// decodeWith decodes b with decoder d (nil: the portable code).
func decodeWith(t *testing.T, d *decoder, b []byte) *KV {
	t.Helper()
	defer func(v *decoder) { vdec = v }(vdec)
	vdec = d
	var kv KV
	if _, err := Decode(b, &kv); err != nil {
		t.Fatal(err)
	}
	return &kv
}

// firstDiff returns the index of the first element whose bits differ, or
// -1. Two NaNs count as equal whatever their payloads: when the product
// and the zero are both NaN, which one the add returns depends on the
// operand order the compiler picks for the portable code's ADDSS, and that
// differs between builds of the same source (it flips under -race).
func firstDiff(a, b []float32) int {
	if len(a) != len(b) {
		return 0
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) && !(a[i] != a[i] && b[i] != b[i]) {
			return i
		}
	}
	return -1
}

// TestVectorDecodeMatchesPortable decodes the same blocks, encoded from
// real and wild values and with payloads of random bytes and f16 edge
// values (NaN and Inf scales and zeros, subnormals, ±65504), with every
// vector decoder this CPU runs and with the portable code, and requires
// the same bits everywhere (NaN for NaN, see firstDiff).
func TestVectorDecodeMatchesPortable(t *testing.T) {
	if len(decoders) == 0 {
		t.Skip("no vector decoder on this CPU or build: the portable code is the only one")
	}
	shapes := []Shape{
		{Tokens: 64, Layers: 2, KVHeads: 8, HeadDim: 128}, // keys decoded as whole token rows
		{Tokens: 37, Layers: 1, KVHeads: 3, HeadDim: 96},  // partial key group
		{Tokens: 5, Layers: 2, KVHeads: 1, HeadDim: 16},   // a group shorter than the default
		{Tokens: 40, Layers: 1, KVHeads: 2, HeadDim: 48},  // vg 32 with D%32 != 0: portable values
		{Tokens: 33, Layers: 1, KVHeads: 1, HeadDim: 80},
		{Tokens: 3, Layers: 1, KVHeads: 5, HeadDim: 8},    // 8 channels: AVX2 only
		{Tokens: 7, Layers: 1, KVHeads: 2, HeadDim: 5},    // odd: padding nibble, portable
		{Tokens: 2, Layers: 1, KVHeads: 3, HeadDim: 24},   // W=72: not a multiple of 16
		{Tokens: 9, Layers: 1, KVHeads: 20, HeadDim: 128}, // W > keyWide: one head at a time
	}
	for _, d := range decoders {
		for si, s := range shapes {
			for _, c := range []Codec{Int4, Int8, F16, Int2} {
				rng := rand.New(rand.NewPCG(uint64(si), uint64(c)))
				n := s.Elements()
				kv := &KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
				for i := range n {
					kv.K[i], kv.V[i] = wildFloat(rng, i), float32(rng.NormFloat64())
				}
				blocks := map[string][]byte{}
				for _, start := range []uint32{0, 2, 100} {
					b, err := Encode(nil, kv, Meta{Codec: c, StartPos: start, Sinks: -1})
					if err != nil {
						t.Fatal(err)
					}
					blocks[fmt.Sprintf("encoded at %d", start)] = b
					blocks[fmt.Sprintf("hostile at %d", start)] = hostileBlock(t, rng, kv, c, start)
				}
				for name, b := range blocks {
					want := decodeWith(t, nil, b)
					got := decodeWith(t, d, b)
					if i := firstDiff(got.K, want.K); i >= 0 {
						t.Fatalf("%s %v %+v %s: K[%d] = %#x, portable %#x", d.name, c, s, name, i, math.Float32bits(got.K[i]), math.Float32bits(want.K[i]))
					}
					if i := firstDiff(got.V, want.V); i >= 0 {
						t.Fatalf("%s %v %+v %s: V[%d] = %#x, portable %#x", d.name, c, s, name, i, math.Float32bits(got.V[i]), math.Float32bits(want.V[i]))
					}
				}
			}
		}
	}
}

// TestVectorDecodeEdgeParams pins each vector loop against the portable
// code on every pair of edge scale and zero, for every code value, so that
// Inf and NaN propagation (0*Inf, Inf-Inf, a NaN scale or zero) is covered
// exhaustively.
func TestVectorDecodeEdgeParams(t *testing.T) {
	if len(decoders) == 0 {
		t.Skip("no vector decoder on this CPU or build")
	}
	// One layer, 16 tokens (one key group, 16 codes cover every value),
	// one head of 16 channels: the value groups are 16 channels.
	s := Shape{Tokens: 16, Layers: 1, KVHeads: 1, HeadDim: 16}
	kv := &KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
	for _, c := range []Codec{Int4, Int8} {
		b, err := Encode(nil, kv, Meta{Codec: c, StartPos: 100, Sinks: 0})
		if err != nil {
			t.Fatal(err)
		}
		h, err := Inspect(b)
		if err != nil {
			t.Fatal(err)
		}
		L := h.layout()
		p := b[HeaderSize:]
		for _, sc := range edgeF16 {
			for _, z := range edgeF16 {
				kp0, kp1 := L.kParams()
				vp0, vp1 := L.vParams()
				for _, r := range [][2]int{{kp0, kp1}, {vp0, vp1}} {
					sec := p[r[0]:r[1]]
					if c == Int8 {
						for i := 0; i+2 <= len(sec); i += 2 {
							binary.LittleEndian.PutUint16(sec[i:], []uint16{sc, z}[i/2%2])
						}
						continue
					}
					for i := 0; i+4 <= len(sec); i += 4 {
						binary.LittleEndian.PutUint16(sec[i:], sc)
						binary.LittleEndian.PutUint16(sec[i+2:], z)
					}
				}
				for _, r := range [][2]int{func() [2]int { a, b := L.kCodes(); return [2]int{a, b} }(), func() [2]int { a, b := L.vCodes(); return [2]int{a, b} }()} {
					for i := r[0]; i < r[1]; i++ {
						p[i] = byte(i*0x11 + i/8) // every nibble and byte value
					}
				}
				refreshCRC(b)
				want := decodeWith(t, nil, b)
				for _, d := range decoders {
					got := decodeWith(t, d, b)
					if i := firstDiff(got.K, want.K); i >= 0 {
						t.Fatalf("%s %v scale %#04x zero %#04x: K[%d] = %#x, portable %#x", d.name, c, sc, z, i, math.Float32bits(got.K[i]), math.Float32bits(want.K[i]))
					}
					if i := firstDiff(got.V, want.V); i >= 0 {
						t.Fatalf("%s %v scale %#04x zero %#04x: V[%d] = %#x, portable %#x", d.name, c, sc, z, i, math.Float32bits(got.V[i]), math.Float32bits(want.V[i]))
					}
				}
			}
		}
	}
}

// TestPortableDecodeGolden forces the portable decoder and checks the
// golden digests, so the fallback that other CPUs and builds run stays
// pinned even on a machine where the vector loops are the default.
func TestPortableDecodeGolden(t *testing.T) {
	defer func(v *decoder) { vdec = v }(vdec)
	vdec = nil
	if DecoderName() != "portable" {
		t.Fatalf("DecoderName() = %q with no vector decoder", DecoderName())
	}
	for _, c := range Codecs() {
		if got := goldenDigest(t, c); got != goldenHashes[c] {
			t.Errorf("%v: portable decode digest %s, want %s", c, got, goldenHashes[c])
		}
	}
}

// TestVectorDecoderSafeOnShortSlices calls the wrappers with slices one
// element or byte short of what the loops would touch: they must refuse
// (report false) instead of calling the assembly.
func TestVectorDecoderSafeOnShortSlices(t *testing.T) {
	for _, d := range decoders {
		const W = 64
		y := make([]float32, 2*W)
		codes := make([]byte, W)
		sf, zf := make([]float32, W), make([]float32, W)
		params := make([]byte, 4*W)
		if !d.channels4(y, codes, sf, zf, 2) || d.channels4(y[:2*W-1], codes, sf, zf, 2) || d.channels4(y, codes[:W-1], sf, zf, 2) || d.channels4(y, codes, sf, zf[:W-1], 2) {
			t.Errorf("%s: channels4 bounds", d.name)
		}
		if !d.groups4(y, codes, params, 32) || d.groups4(y, codes[:W-1], params, 32) || d.groups4(y, codes, params[:4*4-1], 32) || d.groups4(y[:2*W-1], codes, params, 32) {
			t.Errorf("%s: groups4 bounds", d.name)
		}
		if !d.rows8(y, make([]byte, 2*W), params, W) || d.rows8(y, codes, params, W) || d.rows8(y, make([]byte, 2*W), params[:3], W) {
			t.Errorf("%s: rows8 bounds", d.name)
		}
		if d.pairs16 && (!d.pairs(sf, zf, params) || d.pairs(sf, zf, params[:4*W-1])) {
			t.Errorf("%s: pairs bounds", d.name)
		}
		if n := d.f16s(y, codes[:2*d.lanes+1]); n != d.lanes {
			t.Errorf("%s: f16s converted %d of %d+ values", d.name, n, d.lanes)
		}
	}
}
