package client

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec we delegate to
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
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
// stream; it is called once the other fields are known.
type getChunk struct {
	Index     uint32
	Missing   bool
	BlockSize uint32
	Offset    uint32
	into      func(m *getChunk, n int) ([]byte, error)
}

var errMalformed = errors.New("malformed GetResponse")

// cursor reads a BufferSlice as one byte stream without joining it.
type cursor struct {
	bufs mem.BufferSlice
	i    int // current buffer
	off  int // offset in it
}

func (c *cursor) cur() []byte {
	for c.i < len(c.bufs) {
		if b := c.bufs[c.i].ReadOnlyData(); c.off < len(b) {
			return b[c.off:]
		}
		c.i, c.off = c.i+1, 0
	}
	return nil
}

func (c *cursor) done() bool { return c.cur() == nil }

func (c *cursor) varint() (uint64, error) {
	var v uint64
	for shift := uint(0); shift < 64; shift += 7 {
		b := c.cur()
		if b == nil {
			return 0, errMalformed
		}
		c.off++
		v |= uint64(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			return v, nil
		}
	}
	return 0, errMalformed
}

// skip advances n bytes.
func (c *cursor) skip(n int) error {
	for n > 0 {
		b := c.cur()
		if b == nil {
			return errMalformed
		}
		k := min(n, len(b))
		c.off += k
		n -= k
	}
	return nil
}

// copyTo fills dst from the cursor.
func (c *cursor) copyTo(dst []byte) error {
	for len(dst) > 0 {
		b := c.cur()
		if b == nil {
			return errMalformed
		}
		k := copy(dst, b)
		c.off += k
		dst = dst[k:]
	}
	return nil
}

func (m *getChunk) unmarshal(data mem.BufferSlice) error {
	m.Index, m.Missing, m.BlockSize, m.Offset = 0, false, 0, 0
	c := cursor{bufs: data}
	var (
		payload cursor // where field 5 starts
		n       = -1   // its length; -1 when absent
	)
	for !c.done() {
		tag, err := c.varint()
		if err != nil {
			return err
		}
		num, typ := protowire.Number(tag>>3), protowire.Type(tag&7)
		switch typ {
		case protowire.VarintType:
			v, err := c.varint()
			if err != nil {
				return err
			}
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
		case protowire.BytesType:
			l, err := c.varint()
			if err != nil || l > uint64(data.Len()) {
				return errMalformed
			}
			if num == 5 {
				payload, n = c, int(l) // the last occurrence wins, as in proto
			}
			if err := c.skip(int(l)); err != nil {
				return err
			}
		case protowire.Fixed32Type:
			if err := c.skip(4); err != nil {
				return err
			}
		case protowire.Fixed64Type:
			if err := c.skip(8); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: wire type %d", errMalformed, typ)
		}
	}
	if n < 0 {
		n = 0
	}
	dst, err := m.into(m, n)
	if err != nil {
		return err
	}
	if len(dst) < n {
		return errMalformed
	}
	return payload.copyTo(dst[:n])
}
