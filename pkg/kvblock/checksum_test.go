package kvblock

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func checksumBlock(t *testing.T, c Codec) []byte {
	t.Helper()
	s := Shape{Tokens: 16, Layers: 2, KVHeads: 2, HeadDim: 32}
	kv := genKV(s, 9, func(r *rand.Rand, _ int) float32 { return float32(r.NormFloat64()) })
	b, err := Encode(nil, kv, Meta{Codec: c, Sinks: -1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The incremental checksum agrees with Inspect's however the block is cut,
// including cuts inside the checksum field.
func TestChecksumMatchesInspect(t *testing.T) {
	b := checksumBlock(t, Int8)
	h, err := Inspect(b)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var c Checksum
	for round := range 300 {
		c.Reset()
		for off := 0; off < len(b); {
			n := 1 + rng.IntN(100)
			switch {
			case round == 0:
				n = len(b) // one piece
			case round == 1:
				n = 1 // byte by byte
			case rng.IntN(4) == 0:
				n = rng.IntN(len(b))
			}
			end := min(off+n, len(b))
			c.Write(b[off:end])
			off = end
		}
		if c.Sum32() != h.CRC {
			t.Fatalf("round %d: incremental CRC %08x, header %08x", round, c.Sum32(), h.CRC)
		}
		if _, err := VerifySum(b, c.Sum32()); err != nil {
			t.Fatalf("round %d: VerifySum: %v", round, err)
		}
	}
	bad := bytes.Clone(b)
	bad[len(bad)-1] ^= 1
	c.Reset()
	c.Write(bad)
	if _, err := VerifySum(bad, c.Sum32()); !errors.Is(err, ErrChecksum) {
		t.Fatalf("flipped payload bit: %v, want ErrChecksum", err)
	}
	var short Checksum
	short.Write(b[:10])
	if _, err := VerifySum(b[:10], short.Sum32()); !errors.Is(err, ErrInvalid) {
		t.Fatalf("short block: %v, want ErrInvalid", err)
	}
}

// DecodeVerified decodes exactly what Decode does, for every codec.
func TestDecodeVerifiedMatchesDecode(t *testing.T) {
	for _, c := range []Codec{F16, BF16, FP8E4M3, Int8, Int4, Int2} {
		b := checksumBlock(t, c)
		var want, got KV
		h, err := Decode(b, &want)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		if err := DecodeVerified(&h, b, &got); err != nil {
			t.Fatalf("%v: DecodeVerified: %v", c, err)
		}
		if got.Shape != want.Shape || !sameBits(got.K, want.K) || !sameBits(got.V, want.V) {
			t.Fatalf("%v: DecodeVerified differs from Decode", c)
		}
		if err := DecodeVerified(&h, b[:len(b)-1], &got); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%v: truncated block: %v, want ErrInvalid", c, err)
		}
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
