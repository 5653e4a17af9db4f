package client

import (
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec we delegate to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/kvcache/kvcache/internal/grpcmem"
)

// getCodec is the codec of Get streams. On the wire it is the standard
// protobuf codec (named "proto", so the node sees an ordinary call); it
// differs in how it reads a GetResponse into a *getChunk: the small fields
// are parsed in place and the block data is copied once, from the
// transport's buffers straight into the caller's block buffer, instead of
// being gathered into one buffer, copied into a new message and then
// appended to the block. Every other message goes through the standard
// codec.
type getCodec struct{ std encoding.CodecV2 }

var getStreamCodec = getCodec{std: encoding.GetCodecV2("proto")}

func (getCodec) Name() string { return "proto" }

func (c getCodec) Marshal(v any) (mem.BufferSlice, error) { return c.std.Marshal(v) }

func (c getCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*getChunk); ok {
		return m.unmarshal(data)
	}
	return c.std.Unmarshal(data, v)
}

// getChunk is one GetResponse as getStream consumes it. into returns where
// the n data bytes of the message go (len n), or an error that fails the
// stream; it is called once the other fields are known. copied, if set,
// sees every piece of dst right after it is filled (while it is in cache),
// with the piece's offset in dst.
type getChunk struct {
	Index     uint32
	Missing   bool
	BlockSize uint32
	Offset    uint32
	into      func(m *getChunk, n int) ([]byte, error)
	copied    func(m *getChunk, at int, p []byte)
}

func (m *getChunk) unmarshal(data mem.BufferSlice) error {
	m.Index, m.Missing, m.BlockSize, m.Offset = 0, false, 0, 0
	var payload grpcmem.Field // the last occurrence wins, as in proto
	err := grpcmem.Scan(data, func(num protowire.Number, v uint64) {
		switch num {
		case 1:
			m.Index = uint32(v)
		case 2:
			m.Missing = v != 0
		case 3:
			m.BlockSize = uint32(v)
		case 4:
			m.Offset = uint32(v)
		}
	}, func(num protowire.Number, f grpcmem.Field) {
		if num == 5 {
			payload = f
		}
	})
	if err != nil {
		return err
	}
	n := payload.Len()
	dst, err := m.into(m, n)
	if err != nil {
		return err
	}
	var fn func(int, []byte)
	if m.copied != nil {
		fn = func(at int, p []byte) { m.copied(m, at, p) }
	}
	return payload.CopyTo(dst, fn)
}
