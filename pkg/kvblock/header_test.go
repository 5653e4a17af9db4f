package kvblock

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/kvcache/kvcache/pkg/prefix"
)

func validBlock(t *testing.T, c Codec) []byte {
	t.Helper()
	kv := randomKV(Shape{Tokens: 6, Layers: 2, KVHeads: 2, HeadDim: 8}, 4)
	b, err := Encode(nil, kv, Meta{Codec: c, Sinks: -1, HasParent: true, Parent: prefix.Key{1, 2, 3}, RoPE: true})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// refreshCRC recomputes the CRC so that a test reaches the check it targets.
func refreshCRC(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[60:], blockCRC(b))
	return b
}

func TestHeaderErrors(t *testing.T) {
	le := binary.LittleEndian
	type mut func(b []byte) []byte
	set16 := func(off int, v uint16) mut {
		return func(b []byte) []byte { le.PutUint16(b[off:], v); return refreshCRC(b) }
	}
	cases := []struct {
		name  string
		codec Codec
		f     mut
		want  error
	}{
		{"empty", Int8, func(b []byte) []byte { return nil }, ErrInvalid},
		{"truncated header", Int8, func(b []byte) []byte { return b[:40] }, ErrInvalid},
		{"truncated payload", Int8, func(b []byte) []byte { return b[:len(b)-1] }, ErrInvalid},
		{"trailing byte", Int8, func(b []byte) []byte { return append(b, 0) }, ErrInvalid},
		{"bad magic", Int8, func(b []byte) []byte { b[0] = 'X'; return b }, ErrInvalid},
		{"version 0", Int8, func(b []byte) []byte { b[4] = 0; return b }, ErrUnsupported},
		{"version 2", Int8, func(b []byte) []byte { b[4] = 2; return b }, ErrUnsupported},
		{"codec 0", Int8, func(b []byte) []byte { b[5] = 0; return b }, ErrUnsupported},
		{"codec 7", Int8, func(b []byte) []byte { b[5] = 7; return b }, ErrUnsupported},
		{"unknown flag", Int8, func(b []byte) []byte { b[6] |= 4; return refreshCRC(b) }, ErrInvalid},
		{"parent without flag", Int8, func(b []byte) []byte { b[6] &^= flagParent; return refreshCRC(b) }, ErrInvalid},
		{"tokens 0", Int8, set16(8, 0), ErrInvalid},
		{"tokens 4097", Int8, set16(8, 4097), ErrInvalid},
		{"layers 1025", Int8, set16(10, 1025), ErrInvalid},
		{"heads 257", Int8, set16(12, 257), ErrInvalid},
		{"head_dim 1025", Int8, set16(14, 1025), ErrInvalid},
		{"head_dim 0", Int8, set16(14, 0), ErrInvalid},
		{"too many elements", Int8, func(b []byte) []byte {
			le.PutUint16(b[8:], 4096)
			le.PutUint16(b[10:], 1024)
			le.PutUint16(b[12:], 256)
			return refreshCRC(b)
		}, ErrInvalid},
		{"shape vs payload", Int8, set16(8, 7), ErrInvalid},
		{"int8 with groups", Int8, set16(16, 32), ErrInvalid},
		{"int4 k_group 0", Int4, set16(16, 0), ErrInvalid},
		{"int4 k_group > T", Int4, set16(16, 7), ErrInvalid},
		{"int4 v_group > D", Int4, set16(18, 9), ErrInvalid},
		{"int4 other group size", Int4, set16(18, 3), ErrInvalid}, // payload size changes
		{"payload_len", Int8, func(b []byte) []byte { le.PutUint32(b[56:], le.Uint32(b[56:])+1); return refreshCRC(b) }, ErrInvalid},
		{"start_pos overflow", Int8, func(b []byte) []byte { le.PutUint32(b[20:], 0xfffffffe); return refreshCRC(b) }, ErrInvalid},
		{"crc field", Int8, func(b []byte) []byte { b[61] ^= 1; return b }, ErrChecksum},
		{"payload bit", Int8, func(b []byte) []byte { b[len(b)-3] ^= 0x10; return b }, ErrChecksum},
		{"payload first byte", FP8E4M3, func(b []byte) []byte { b[HeaderSize] ^= 0xff; return b }, ErrChecksum},
		{"header rope flag", Int4, func(b []byte) []byte { b[6] ^= flagRoPE; return b }, ErrChecksum},
		{"header start_pos", F16, func(b []byte) []byte { b[23] ^= 0x80; return b }, ErrChecksum},
		{"header parent byte", BF16, func(b []byte) []byte { b[30] ^= 1; return b }, ErrChecksum},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.f(validBlock(t, tc.codec))
			_, err := Inspect(b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Inspect: %v, want %v", err, tc.want)
			}
			var kv KV
			if _, err := Decode(b, &kv); !errors.Is(err, tc.want) {
				t.Fatalf("Decode: %v, want %v", err, tc.want)
			}
			if kv.K != nil {
				t.Fatal("Decode touched kv on error")
			}
			_, perr := ParseHeader(b)
			if tc.want == ErrChecksum && perr != nil {
				t.Fatalf("ParseHeader should not check the CRC: %v", perr)
			}
		})
	}
	// Every single-bit flip anywhere is caught by something.
	for _, c := range Codecs() {
		b := validBlock(t, c)
		for i := range len(b) * 8 {
			b[i/8] ^= 1 << (i % 8)
			if _, err := Inspect(b); err == nil {
				t.Fatalf("%v: flip of bit %d undetected", c, i)
			}
			b[i/8] ^= 1 << (i % 8)
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	kv := randomKV(Shape{Tokens: 33, Layers: 3, KVHeads: 2, HeadDim: 80}, 9)
	p := prefix.Key{0xde, 0xad}
	for _, c := range Codecs() {
		b, err := Encode(nil, kv, Meta{Codec: c, StartPos: 2, RoPE: true, Parent: p, HasParent: true, Sinks: -1})
		if err != nil {
			t.Fatal(err)
		}
		h, err := Inspect(b)
		if err != nil {
			t.Fatal(err)
		}
		kg, vg := groups(c, kv.Shape)
		want := Header{Version: 1, Codec: c, RoPE: true, Sinks: c.DefaultSinks(), Shape: kv.Shape,
			KGroup: kg, VGroup: vg, StartPos: 2, Parent: p, HasParent: true,
			PayloadLen: len(b) - HeaderSize, CRC: binary.LittleEndian.Uint32(b[60:])}
		if h != want {
			t.Fatalf("%v:\n got %+v\nwant %+v", c, h, want)
		}
		if c.kivi() != 0 && (h.KGroup != 32 || h.VGroup != 32) {
			t.Fatalf("groups %d %d", h.KGroup, h.VGroup)
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	kv := randomKV(Shape{Tokens: 4, Layers: 1, KVHeads: 1, HeadDim: 4}, 1)
	cases := []struct {
		name string
		kv   *KV
		m    Meta
		want error
	}{
		{"codec 0", kv, Meta{}, ErrUnsupported},
		{"codec 9", kv, Meta{Codec: 9}, ErrUnsupported},
		{"nil kv", nil, Meta{Codec: Int8}, ErrInvalid},
		{"short K", &KV{Shape: kv.Shape, K: kv.K[:3], V: kv.V}, Meta{Codec: Int8}, ErrInvalid},
		{"bad shape", &KV{Shape: Shape{Tokens: 5000, Layers: 1, KVHeads: 1, HeadDim: 1}}, Meta{Codec: Int8}, ErrInvalid},
		{"sinks 256", kv, Meta{Codec: Int8, Sinks: 256}, ErrInvalid},
		{"sinks -2", kv, Meta{Codec: Int8, Sinks: -2}, ErrInvalid},
		{"start overflow", kv, Meta{Codec: Int8, StartPos: 0xfffffffe}, ErrInvalid},
	}
	for _, tc := range cases {
		if _, err := Encode(nil, tc.kv, tc.m); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if EncodedSize(9, kv.Shape, 0) != 0 || EncodedSize(Int8, Shape{}, 0) != 0 || EncodedSize(Int8, kv.Shape, 5) != 0 {
		t.Error("EncodedSize of invalid input should be 0")
	}
}
