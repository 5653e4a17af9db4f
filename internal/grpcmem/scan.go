package grpcmem

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrMalformed reports a message Scan cannot parse.
var ErrMalformed = errors.New("grpcmem: malformed protobuf message")

// Scan parses the protobuf message in data without joining its buffers (a
// message arrives as one buffer per HTTP/2 frame). It calls varint for
// every varint field and bytes for every length-delimited field, with a
// Field through which the caller copies the bytes wherever they belong, or
// ignores them; Fields stay valid until data is freed. Fixed-size fields
// are skipped; groups are an error.
func Scan(data mem.BufferSlice, varint func(num protowire.Number, v uint64), bytes func(num protowire.Number, f Field)) error {
	c := cursor{bufs: data}
	total := data.Len()
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
			varint(num, v)
		case protowire.BytesType:
			l, err := c.varint()
			if err != nil || l > uint64(total) {
				return ErrMalformed
			}
			f := Field{c: c, n: int(l)}
			if err := c.skip(int(l)); err != nil {
				return err
			}
			bytes(num, f)
		case protowire.Fixed32Type:
			if err := c.skip(4); err != nil {
				return err
			}
		case protowire.Fixed64Type:
			if err := c.skip(8); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: wire type %d", ErrMalformed, typ)
		}
	}
	return nil
}

// Field is a length-delimited field found by Scan.
type Field struct {
	c cursor
	n int
}

// Len is the field's length in bytes.
func (f Field) Len() int { return f.n }

// CopyTo copies the field into dst[:f.Len()] (dst must be long enough),
// calling fn, if not nil, with each piece right after it is copied (while
// it is in cache) and the piece's offset in dst.
func (f Field) CopyTo(dst []byte, fn func(at int, p []byte)) error {
	if len(dst) < f.n {
		return ErrMalformed
	}
	c := f.c
	for at := 0; at < f.n; {
		b := c.cur()
		if b == nil {
			return ErrMalformed
		}
		k := copy(dst[at:f.n], b)
		c.off += k
		if fn != nil {
			fn(at, dst[at:at+k])
		}
		at += k
	}
	return nil
}

// AppendTo appends the field to dst.
func (f Field) AppendTo(dst []byte) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, f.n)...)
	_ = f.CopyTo(dst[n:], nil)
	return dst
}

// cursor reads a BufferSlice as one byte stream.
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
			return 0, ErrMalformed
		}
		c.off++
		v |= uint64(b[0]&0x7f) << shift
		if b[0] < 0x80 {
			return v, nil
		}
	}
	return 0, ErrMalformed
}

func (c *cursor) skip(n int) error {
	for n > 0 {
		b := c.cur()
		if b == nil {
			return ErrMalformed
		}
		k := min(n, len(b))
		c.off += k
		n -= k
	}
	return nil
}
