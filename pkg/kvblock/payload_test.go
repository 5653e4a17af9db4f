package kvblock

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// F16Payload hands out exactly the words Decode converts, K then V, for
// f16 blocks without sinks, and refuses every other block.
func TestF16Payload(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	s := Shape{Tokens: 4, Layers: 3, KVHeads: 2, HeadDim: 8}
	kv := &KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
	for i := range kv.K {
		kv.K[i], kv.V[i] = float32(rng.NormFloat64()), float32(rng.NormFloat64())
	}
	// Random payloads too, with infinities and NaNs (a hostile block
	// with a valid CRC): handed out as they are, for the importer to refuse.
	blk, err := Encode(nil, kv, Meta{Codec: F16, StartPos: 8, Sinks: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{blk, hostileBlock(t, rng, kv, F16, 8)} {
		h, err := Inspect(b)
		if err != nil {
			t.Fatal(err)
		}
		k, v, ok := F16Payload(&h, b)
		if !ok {
			t.Fatal("f16 block refused")
		}
		var dec KV
		if err := DecodeVerified(&h, b, &dec); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			words []byte
			want  []float32
		}{{k, dec.K}, {v, dec.V}} {
			if len(c.words) != 2*len(c.want) || cap(c.words) != len(c.words) {
				t.Fatalf("payload of %d bytes (cap %d), want %d", len(c.words), cap(c.words), 2*len(c.want))
			}
			for i, x := range c.want {
				got := F16ToFloat32(binary.LittleEndian.Uint16(c.words[2*i:]))
				if math.Float32bits(got) != math.Float32bits(x) && !(got != got && x != x) {
					t.Fatalf("element %d: word gives %v, Decode %v", i, got, x)
				}
			}
		}
	}

	h, _ := Inspect(blk)
	short := h
	short.PayloadLen -= 2
	for name, c := range map[string]struct {
		h *Header
		b []byte
	}{
		"truncated":  {&h, blk[:len(blk)-1]},
		"longer":     {&h, append(append([]byte(nil), blk...), 0)},
		"bad header": {&short, blk[:len(blk)-2]},
	} {
		if _, _, ok := F16Payload(c.h, c.b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, m := range []Meta{{Codec: Int8, Sinks: -1}, {Codec: BF16, Sinks: -1}, {Codec: F16, Sinks: 2}} {
		b, err := Encode(nil, kv, m)
		if err != nil {
			t.Fatal(err)
		}
		h, err := Inspect(b)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok := F16Payload(&h, b); ok {
			t.Errorf("%v with %d sinks: accepted", m.Codec, m.Sinks)
		}
	}
}

// EncodeHalf of a block's f16 words writes the bytes Encode writes for
// those values, and refuses what Encode would and other codecs or sinks.
func TestEncodeHalf(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	s := Shape{Tokens: 4, Layers: 3, KVHeads: 2, HeadDim: 8}
	kv := &KV{Shape: s, K: make([]float32, s.Elements()), V: make([]float32, s.Elements())}
	for i := range kv.K {
		kv.K[i], kv.V[i] = RoundF16(float32(rng.NormFloat64())), RoundF16(float32(rng.NormFloat64()*100))
	}
	k, v := make([]byte, 2*s.Elements()), make([]byte, 2*s.Elements())
	encodeF16(k, kv.K)
	encodeF16(v, kv.V)
	for _, m := range []Meta{
		{Codec: F16, Sinks: -1},
		{Codec: F16, Sinks: 0, StartPos: 64, RoPE: true, HasParent: true, Parent: [32]byte{1, 2, 3}},
	} {
		want, err := Encode(nil, kv, m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := EncodeHalf(make([]byte, 7, 10), s, k, v, m)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("%+v: EncodeHalf differs from Encode", m)
		}
		if _, err := Inspect(got); err != nil {
			t.Fatal(err)
		}
	}
	for name, c := range map[string]struct {
		s    Shape
		k, v []byte
		m    Meta
	}{
		"int8":       {s, k, v, Meta{Codec: Int8, Sinks: -1}},
		"sinks":      {s, k, v, Meta{Codec: F16, Sinks: 4}},
		"short k":    {s, k[:len(k)-2], v, Meta{Codec: F16, Sinks: -1}},
		"odd v":      {s, k, v[:len(v)-1], Meta{Codec: F16, Sinks: -1}},
		"bad shape":  {Shape{Tokens: 0, Layers: 3, KVHeads: 2, HeadDim: 8}, nil, nil, Meta{Codec: F16, Sinks: -1}},
		"start wrap": {s, k, v, Meta{Codec: F16, Sinks: -1, StartPos: 1<<32 - 2}},
	} {
		if _, err := EncodeHalf(nil, c.s, c.k, c.v, c.m); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}
