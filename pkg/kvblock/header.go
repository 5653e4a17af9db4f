package kvblock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// HeaderSize is the fixed size of the block header in bytes.
const HeaderSize = 64

// Version is the block format version this package writes and reads.
const Version = 1

// magic starts every block; the trailing "1" is historical, the version byte
// is what decoders check.
const magic = "KVB1"

// Limits enforced by ParseHeader (and by Encode). They bound what a hostile
// header can make a decoder allocate: at most MaxElements float32 for K and
// the same for V, i.e. 1 GiB in total.
const (
	MaxTokens   = 4096
	MaxLayers   = 1024
	MaxKVHeads  = 256
	MaxHeadDim  = 1024
	MaxSinks    = 255     // the header stores the sink count in one byte
	MaxElements = 1 << 27 // per tensor: Layers*Tokens*KVHeads*HeadDim
)

// Errors. Callers match them with errors.Is; the server maps them to gRPC
// status codes as noted.
var (
	// ErrInvalid: malformed or inconsistent header, payload length
	// mismatch, limits exceeded, bad Encode input. gRPC InvalidArgument.
	ErrInvalid = errors.New("kvblock: invalid block")
	// ErrUnsupported: unknown codec or format version. It is a separate
	// sentinel (not wrapped by ErrInvalid) so a node can tell "newer
	// client" from "garbage"; gRPC InvalidArgument as well.
	ErrUnsupported = errors.New("kvblock: unsupported codec or version")
	// ErrChecksum: the CRC32C does not match; the bytes were damaged in
	// transit or at rest. gRPC DataLoss.
	ErrChecksum = errors.New("kvblock: checksum mismatch")
)

// Header flag bits (byte 6). Unknown bits are rejected so they can be given
// a meaning later.
const (
	flagRoPE   = 1 << 0
	flagParent = 1 << 1
	flagsKnown = flagRoPE | flagParent
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded fixed-size block header.
type Header struct {
	Version   uint8
	Codec     Codec
	RoPE      bool // keys stored post-RoPE
	Sinks     int  // sequence-level sink count S; tokens at absolute position < S are f16 exceptions
	Shape     Shape
	KGroup    int // KIVI: tokens per key group (0 for other codecs)
	VGroup    int // KIVI: channels per value group (0 for other codecs)
	StartPos  uint32
	Parent    prefix.Key
	HasParent bool
	// PayloadLen is the number of bytes after the header; it always equals
	// what the codec implies for the shape.
	PayloadLen int
	CRC        uint32
}

// SinkTokens returns how many of the block's tokens are sink exceptions.
func (h *Header) SinkTokens() int { return SinkTokensInBlock(h.Sinks, h.StartPos, h.Shape.Tokens) }

// Size returns the total block size, HeaderSize + PayloadLen.
func (h *Header) Size() int { return HeaderSize + h.PayloadLen }

func (h *Header) layout() layout {
	return newLayout(h.Codec, h.Shape, h.KGroup, h.VGroup, h.SinkTokens())
}

func (s Shape) check() error {
	switch {
	case s.Tokens < 1 || s.Tokens > MaxTokens,
		s.Layers < 1 || s.Layers > MaxLayers,
		s.KVHeads < 1 || s.KVHeads > MaxKVHeads,
		s.HeadDim < 1 || s.HeadDim > MaxHeadDim:
		return fmt.Errorf("shape %+v outside limits: %w", s, ErrInvalid)
	}
	if int64(s.Tokens)*int64(s.Layers)*int64(s.KVHeads)*int64(s.HeadDim) > MaxElements {
		return fmt.Errorf("shape %+v exceeds %d elements: %w", s, MaxElements, ErrInvalid)
	}
	return nil
}

// ParseHeader parses and validates the header of block: magic, version,
// codec, flags, limits, group sizes and that len(block) is exactly
// HeaderSize plus the payload length the codec implies. It does not check
// the CRC (see Inspect).
func ParseHeader(block []byte) (Header, error) {
	var h Header
	if len(block) < HeaderSize {
		return h, fmt.Errorf("%d bytes, shorter than the header: %w", len(block), ErrInvalid)
	}
	if string(block[0:4]) != magic {
		return h, fmt.Errorf("bad magic %q: %w", block[0:4], ErrInvalid)
	}
	le := binary.LittleEndian
	h.Version = block[4]
	h.Codec = Codec(block[5])
	flags := block[6]
	h.Sinks = int(block[7])
	h.Shape = Shape{
		Tokens:  int(le.Uint16(block[8:])),
		Layers:  int(le.Uint16(block[10:])),
		KVHeads: int(le.Uint16(block[12:])),
		HeadDim: int(le.Uint16(block[14:])),
	}
	h.KGroup = int(le.Uint16(block[16:]))
	h.VGroup = int(le.Uint16(block[18:]))
	h.StartPos = le.Uint32(block[20:])
	copy(h.Parent[:], block[24:56])
	h.PayloadLen = int(le.Uint32(block[56:]))
	h.CRC = le.Uint32(block[60:])
	h.RoPE = flags&flagRoPE != 0
	h.HasParent = flags&flagParent != 0

	if h.Version != Version {
		return h, fmt.Errorf("version %d: %w", h.Version, ErrUnsupported)
	}
	if !h.Codec.Valid() {
		return h, fmt.Errorf("codec id %d: %w", uint8(h.Codec), ErrUnsupported)
	}
	if flags&^flagsKnown != 0 {
		return h, fmt.Errorf("unknown flags %#02x: %w", flags, ErrInvalid)
	}
	if !h.HasParent && h.Parent != (prefix.Key{}) {
		return h, fmt.Errorf("parent key set without has-parent flag: %w", ErrInvalid)
	}
	if err := h.Shape.check(); err != nil {
		return h, err
	}
	if uint64(h.StartPos)+uint64(h.Shape.Tokens) > 1<<32 {
		return h, fmt.Errorf("start_pos %d + %d tokens overflows uint32: %w", h.StartPos, h.Shape.Tokens, ErrInvalid)
	}
	if h.Codec.kivi() != 0 {
		if h.KGroup < 1 || h.KGroup > h.Shape.Tokens || h.VGroup < 1 || h.VGroup > h.Shape.HeadDim {
			return h, fmt.Errorf("groups k=%d v=%d for %+v: %w", h.KGroup, h.VGroup, h.Shape, ErrInvalid)
		}
	} else if h.KGroup != 0 || h.VGroup != 0 {
		return h, fmt.Errorf("%v block with groups k=%d v=%d: %w", h.Codec, h.KGroup, h.VGroup, ErrInvalid)
	}
	if want := h.layout().total; h.PayloadLen != want {
		return h, fmt.Errorf("payload_len %d, %v %+v implies %d: %w", h.PayloadLen, h.Codec, h.Shape, want, ErrInvalid)
	}
	if len(block) != HeaderSize+h.PayloadLen {
		return h, fmt.Errorf("block of %d bytes, header says %d: %w", len(block), HeaderSize+h.PayloadLen, ErrInvalid)
	}
	return h, nil
}

// Inspect is ParseHeader plus the CRC32C check over the whole block, without
// decoding. It runs at CRC speed (hardware CRC32C, well above 10 GB/s), which
// is why the cache node can call it on every Put.
func Inspect(block []byte) (Header, error) {
	h, err := ParseHeader(block)
	if err != nil {
		return h, err
	}
	if got := blockCRC(block); got != h.CRC {
		return h, fmt.Errorf("crc32c %08x, header says %08x: %w", got, h.CRC, ErrChecksum)
	}
	return h, nil
}

// blockCRC is the CRC32C of header bytes [0,crcField) followed by the payload.
func blockCRC(block []byte) uint32 {
	c := crc32.Update(0, castagnoli, block[:crcField])
	return crc32.Update(c, castagnoli, block[HeaderSize:])
}

// putHeader writes every header field except the CRC.
func putHeader(b []byte, h *Header) {
	le := binary.LittleEndian
	copy(b[0:4], magic)
	b[4] = h.Version
	b[5] = byte(h.Codec)
	var flags byte
	if h.RoPE {
		flags |= flagRoPE
	}
	if h.HasParent {
		flags |= flagParent
	}
	b[6] = flags
	b[7] = byte(h.Sinks)
	le.PutUint16(b[8:], uint16(h.Shape.Tokens))
	le.PutUint16(b[10:], uint16(h.Shape.Layers))
	le.PutUint16(b[12:], uint16(h.Shape.KVHeads))
	le.PutUint16(b[14:], uint16(h.Shape.HeadDim))
	le.PutUint16(b[16:], uint16(h.KGroup))
	le.PutUint16(b[18:], uint16(h.VGroup))
	le.PutUint32(b[20:], h.StartPos)
	if h.HasParent {
		copy(b[24:56], h.Parent[:])
	} else {
		clear(b[24:56])
	}
	le.PutUint32(b[56:], uint32(h.PayloadLen))
}
