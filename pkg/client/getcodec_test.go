package client

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"
)

// split cuts b into a BufferSlice of pieces of random sizes, as frames
// arrive.
func split(b []byte, rng *rand.Rand) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		n := min(len(b), 1+rng.IntN(7))
		out = append(out, mem.SliceBuffer(b[:n]))
		b = b[n:]
	}
	return out
}

func TestGetChunkUnmarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 300)
	for i := range data {
		data[i] = byte(i * 7)
	}
	cases := []*kvcachev1.GetResponse{
		{Index: 3, BlockSize: 1000, Offset: 700, Data: data},
		{Index: 0, BlockSize: 300, Data: data},
		{Index: 9, Missing: true},
		{Index: 1, BlockSize: 0},
	}
	for _, want := range cases {
		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		// An unknown field (number 15, bytes) must be skipped.
		wire = append(wire, 15<<3|2, 2, 0xaa, 0xbb)
		for range 20 {
			var dst []byte
			var seen []byte
			m := &getChunk{
				into: func(m *getChunk, n int) ([]byte, error) {
					dst = make([]byte, n)
					return dst, nil
				},
				copied: func(m *getChunk, at int, p []byte) {
					if !bytes.Equal(p, dst[at:at+len(p)]) {
						t.Fatal("copied reports a piece that is not at its offset")
					}
					seen = append(seen, p...)
				},
			}
			if err := getStreamCodec.Unmarshal(split(wire, rng), m); err != nil {
				t.Fatal(err)
			}
			if m.Index != want.Index || m.Missing != want.Missing || m.BlockSize != want.BlockSize || m.Offset != want.Offset {
				t.Fatalf("got %+v, want %v", m, want)
			}
			if !bytes.Equal(dst, want.Data) || !bytes.Equal(seen, want.Data) {
				t.Fatalf("data %d bytes, want %d", len(dst), len(want.Data))
			}
		}
		// A truncated message is an error, never a panic.
		for cut := 1; cut < len(wire)-4; cut += 13 {
			m := &getChunk{into: func(*getChunk, int) ([]byte, error) { return make([]byte, 1000), nil }}
			_ = getStreamCodec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire[:cut])}, m)
		}
	}
	// Other messages go through the standard codec.
	var lr kvcachev1.LookupResponse
	wire, _ := proto.Marshal(&kvcachev1.LookupResponse{PrefixLen: 7})
	if err := getStreamCodec.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &lr); err != nil || lr.PrefixLen != 7 {
		t.Fatalf("LookupResponse: %v, %v", lr.PrefixLen, err)
	}
}
