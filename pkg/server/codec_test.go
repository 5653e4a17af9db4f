package server

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"
)

// The codec's Get messages are byte-for-byte what the protobuf codec
// writes, so any client reads them; large data is referenced, not copied,
// and its release is reported.
func TestCodecGetResponseWireCompatible(t *testing.T) {
	big := bytes.Repeat([]byte{7}, 64<<10)
	cases := []*kvcachev1.GetResponse{
		{Index: 5, BlockSize: 1 << 20, Offset: 3 << 18, Data: big},
		{Index: 0, BlockSize: 10, Data: []byte("0123456789")},
		{Index: 2, Missing: true},
		{Index: 1, BlockSize: 0},
	}
	c := Codec()
	for _, m := range cases {
		want, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		track := newSendTracker()
		ch := &chunk{track: track}
		ch.Index, ch.Missing, ch.BlockSize, ch.Offset, ch.Data = m.Index, m.Missing, m.BlockSize, m.Offset, m.Data
		bs, err := c.Marshal(ch)
		if err != nil {
			t.Fatal(err)
		}
		if got := bs.Materialize(); !bytes.Equal(got, want) {
			t.Fatalf("index %d: codec wrote %d bytes, protobuf %d", m.Index, len(got), len(want))
		}
		zeroCopy := len(bs) > 1
		if zeroCopy != (len(m.Data) >= 1<<10) {
			t.Fatalf("index %d: %d buffers", m.Index, len(bs))
		}
		if zeroCopy && &bs[1].ReadOnlyData()[0] != &m.Data[0] {
			t.Fatal("large data was copied")
		}
		if zeroCopy && track.out.Load() != 1 {
			t.Fatalf("%d buffers tracked, want 1", track.out.Load())
		}
		bs.Free()
		if track.out.Load() != 0 || !track.wait(t.Context()) {
			t.Fatal("release not reported")
		}
		// Without the codec a chunk is still a GetResponse.
		std, err := proto.Marshal(&ch.GetResponse)
		if err != nil || !bytes.Equal(std, want) {
			t.Fatal("a chunk does not marshal as its GetResponse")
		}
	}
}

// Put's requests parse to what the protobuf codec reads, whether into
// places the data or it lands in scratch, however the message is split.
func TestCodecPutRequestParse(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3}, 5000)
	cases := []*kvcachev1.PutRequest{
		{Namespace: bytes.Repeat([]byte{9}, 32), Key: bytes.Repeat([]byte{8}, 32), BlockSize: 20000, Data: data},
		{Offset: 15000, Data: data[:5000]},
		{Key: []byte{1}, BlockSize: 3},
	}
	c := Codec()
	for _, want := range cases {
		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		for _, place := range []bool{false, true} {
			for _, piece := range []int{1, 7, 1000, len(wire)} {
				var placed []byte
				m := &putChunk{into: func(m *putChunk, n int) []byte {
					if !place {
						return nil
					}
					placed = make([]byte, n)
					return placed
				}}
				var bs mem.BufferSlice
				for w := wire; len(w) > 0; w = w[min(piece, len(w)):] {
					bs = append(bs, mem.SliceBuffer(w[:min(piece, len(w))]))
				}
				if err := c.Unmarshal(bs, m); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(m.GetNamespace(), want.Namespace) || !bytes.Equal(m.GetKey(), want.Key) ||
					m.GetBlockSize() != want.BlockSize || m.GetOffset() != want.Offset || !bytes.Equal(m.GetData(), want.Data) {
					t.Fatalf("parsed %+v, want %v", m, want)
				}
				if m.placed != place || (place && !bytes.Equal(placed, want.Data)) {
					t.Fatal("data not placed where into said")
				}
			}
		}
		// The standard codec still works on a putChunk.
		var std putChunk
		if err := encoding.GetCodecV2("proto").Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &std); err != nil {
			t.Fatal(err)
		}
		if std.GetBlockSize() != want.BlockSize || !bytes.Equal(std.GetData(), want.Data) {
			t.Fatal("putChunk without Codec lost fields")
		}
	}
}
