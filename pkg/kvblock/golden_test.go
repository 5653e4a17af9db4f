package kvblock

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"math/rand/v2"
	"testing"
)

// goldenHashes pin the exact bytes Encode produces, and the exact floats
// Decode produces (for encoded and for random CRC-fixed payloads), over a
// spread of shapes and inputs for every codec. They were generated with the
// straightforward scalar implementation before the hot loops were optimized:
// any optimization must be bit-identical. Regenerate only for a deliberate
// format change (go test -run TestGolden -v prints the new values).
var goldenHashes = map[Codec]string{
	F16:     "646998441a06f001f29a67ba",
	BF16:    "344507c4846ba586ed7576c2",
	FP8E4M3: "066a2e95cbfbe1910dee251f",
	Int8:    "f98873c43bb05ccc252d2954",
	Int4:    "c03f3fa658336a8836bf062a",
	Int2:    "2093cb7430fd85b93e3bf077",
}

// wildFloat returns unrounded float32 values over the whole range: f16
// subnormals and ties, huge magnitudes, ±0, ±Inf and NaN.
func wildFloat(r *rand.Rand, i int) float32 {
	switch r.IntN(16) {
	case 0:
		return float32(math.NaN())
	case 1:
		return float32(math.Inf(1 - 2*r.IntN(2)))
	case 2:
		return math.Float32frombits(r.Uint32()) // anything, incl. NaN payloads
	case 3:
		return float32(r.NormFloat64()) * 1e-5 // f16 subnormal range
	case 4:
		return float32(r.NormFloat64()) * 3e4 // near and beyond 65504
	case 5:
		return math.Float32frombits(0x80000000)
	case 6: // exact f16 midpoints (ties)
		return math.Float32frombits(r.Uint32()&^0x1fff | 0x1000)
	}
	return float32(r.NormFloat64()) * float32(1+r.IntN(8))
}

func goldenDigest(t *testing.T, c Codec) string {
	hsum := sha256.New()
	var kv KV
	var fb [4]byte
	putFloats := func(fs []float32) {
		for _, f := range fs {
			b := math.Float32bits(f)
			if f != f {
				b = 0x7fc00000 // NaN payload propagation is not pinned
			}
			binary.LittleEndian.PutUint32(fb[:], b)
			hsum.Write(fb[:])
		}
	}
	shapes := append([]Shape{
		{Tokens: 64, Layers: 2, KVHeads: 2, HeadDim: 128},
		{Tokens: 33, Layers: 1, KVHeads: 2, HeadDim: 96},
		{Tokens: 70, Layers: 1, KVHeads: 1, HeadDim: 35},
		{Tokens: 9, Layers: 2, KVHeads: 3, HeadDim: 66},
		{Tokens: 4, Layers: 1, KVHeads: 2, HeadDim: 3},
	}, testShapes...)
	gens := []func(*rand.Rand, int) float32{wildFloat}
	for _, p := range patterns {
		gens = append(gens, p.gen)
	}
	for si, s := range shapes {
		for gi, gen := range gens {
			for _, start := range []uint32{0, 3, 500} {
				rng := rand.New(rand.NewPCG(uint64(si), uint64(gi)<<8|uint64(start)))
				n := s.Elements()
				in := &KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
				for i := range n {
					in.K[i], in.V[i] = gen(rng, i), gen(rng, i+1)
					if gi > 0 && start == 3 { // rounded, as the worker hands them over
						in.K[i], in.V[i] = RoundF16(in.K[i]), RoundF16(in.V[i])
					}
				}
				blk, err := Encode(nil, in, Meta{Codec: c, StartPos: start, Sinks: -1})
				if err != nil {
					t.Fatal(err)
				}
				hsum.Write(blk)
				if _, err := Decode(blk, &kv); err != nil {
					t.Fatal(err)
				}
				putFloats(kv.K)
				putFloats(kv.V)
				// Hostile payload: random codes and parameters.
				for i := HeaderSize; i < len(blk); i++ {
					blk[i] = byte(rng.Uint32())
				}
				binary.LittleEndian.PutUint32(blk[60:], blockCRC(blk))
				if _, err := Decode(blk, &kv); err != nil {
					t.Fatal(err)
				}
				putFloats(kv.K)
				putFloats(kv.V)
			}
		}
	}
	return hex.EncodeToString(hsum.Sum(nil)[:12])
}

func TestGolden(t *testing.T) {
	for _, c := range Codecs() {
		got := goldenDigest(t, c)
		t.Logf("%v: %q,", c, got)
		if got != goldenHashes[c] {
			t.Errorf("%v: digest %s, want %s", c, got, goldenHashes[c])
		}
	}
}
