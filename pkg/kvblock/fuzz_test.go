package kvblock

import (
	"errors"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, c := range Codecs() {
		for _, s := range []Shape{{Tokens: 3, Layers: 1, KVHeads: 2, HeadDim: 5}, {Tokens: 33, Layers: 2, KVHeads: 1, HeadDim: 8}} {
			kv := randomKV(s, 1)
			b, err := Encode(nil, kv, Meta{Codec: c, Sinks: 4, StartPos: 1})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte("KVB1"))
	var kv KV
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzOne(t, b, &kv)
		// Random bytes rarely carry a valid CRC; fix it so hostile headers
		// and payloads reach the codecs too.
		if len(b) >= HeaderSize {
			fuzzOne(t, refreshCRC(append([]byte(nil), b...)), &kv)
		}
	})
}

func fuzzOne(t *testing.T, b []byte, kv *KV) {
	{
		h, err := Decode(b, kv)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrChecksum) {
				t.Fatalf("unclassified error %v", err)
			}
			// Hostile CRC-correct blocks must fail ParseHeader the same way.
			if _, perr := ParseHeader(b); perr == nil && !errors.Is(err, ErrChecksum) {
				t.Fatalf("ParseHeader accepts what Decode rejects: %v", err)
			}
		} else {
			n := h.Shape.Elements()
			if len(kv.K) != n || len(kv.V) != n || n > MaxElements {
				t.Fatalf("decoded %d/%d elements for %+v", len(kv.K), len(kv.V), h.Shape)
			}
			// Round trip: re-encoding the decoded block must give a valid block.
			b2, err := Encode(nil, kv, Meta{Codec: h.Codec, StartPos: h.StartPos, Sinks: h.Sinks, RoPE: h.RoPE, Parent: h.Parent, HasParent: h.HasParent})
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if _, err := Inspect(b2); err != nil {
				t.Fatalf("re-encoded block invalid: %v", err)
			}
		}
		if cap(kv.K) > MaxElements || cap(kv.V) > MaxElements {
			t.Fatalf("capacity %d/%d beyond the limit", cap(kv.K), cap(kv.V))
		}
	}
	// The streaming path (Checksum fed in pieces, VerifySum, then
	// DecodeVerified) accepts exactly what Decode accepts, with the same
	// values.
	var c Checksum
	c.Write(b[:len(b)/3])
	c.Write(b[len(b)/3:])
	var want KV
	_, derr := Decode(b, &want)
	h, verr := VerifySum(b, c.Sum32())
	if (derr == nil) != (verr == nil) {
		t.Fatalf("Decode: %v; VerifySum: %v", derr, verr)
	}
	if verr == nil {
		var got KV
		if err := DecodeVerified(&h, b, &got); err != nil {
			t.Fatalf("DecodeVerified after VerifySum: %v", err)
		}
		if !sameBits(got.K, want.K) || !sameBits(got.V, want.V) {
			t.Fatal("DecodeVerified differs from Decode")
		}
	}
}
