package kvblock

import (
	"fmt"
	"strings"
)

// Codec identifies how a block's payload is encoded. The numeric values are
// part of the on-disk format (docs/block-format.md) and never change.
type Codec uint8

// The codecs. Int8 is the default for the cache.
const (
	F16     Codec = 1 // raw IEEE binary16, lossless for f16 KV
	BF16    Codec = 2 // raw bfloat16, lossless for bf16 KV
	FP8E4M3 Codec = 3 // fp8 E4M3, fp32 scale per (layer, head)
	Int8    Codec = 4 // symmetric int8, fp16 scale per (token, head)
	Int4    Codec = 5 // KIVI 4-bit: keys per channel, values per token
	Int2    Codec = 6 // KIVI 2-bit, same layout as Int4
)

var codecNames = [...]string{F16: "f16", BF16: "bf16", FP8E4M3: "fp8_e4m3", Int8: "int8", Int4: "int4", Int2: "int2"}

// String returns the codec's canonical name ("int8"), or "codec(N)" for an
// unknown value so that log lines stay readable.
func (c Codec) String() string {
	if c.Valid() {
		return codecNames[c]
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Valid reports whether c is a codec this package implements.
func (c Codec) Valid() bool { return c >= F16 && c <= Int2 }

// ParseCodec maps a canonical name (case-insensitive) to its Codec. It also
// accepts "fp8" as a shorthand for fp8_e4m3 because that is how users type it.
func ParseCodec(s string) (Codec, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "fp8" {
		return FP8E4M3, nil
	}
	for _, c := range Codecs() {
		if codecNames[c] == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("kvblock: codec %q: %w", s, ErrUnsupported)
}

// Codecs returns all codecs in id order.
func Codecs() []Codec { return []Codec{F16, BF16, FP8E4M3, Int8, Int4, Int2} }

// DefaultSinks returns the sink-token count Encode uses when Meta.Sinks is
// -1: 4 for the lossy codecs (attention sinks carry outliers that dominate
// quantization error), 0 for the raw 16-bit ones where exceptions would only
// duplicate data.
func (c Codec) DefaultSinks() int {
	if c == F16 || c == BF16 {
		return 0
	}
	return 4
}

// kivi reports the bit width of a KIVI codec, or 0.
func (c Codec) kivi() int {
	switch c {
	case Int4:
		return 4
	case Int2:
		return 2
	}
	return 0
}

// DefaultGroup is the KIVI group size: KGroup tokens per key group and
// VGroup channels per value group, both clipped to the block's extent.
const DefaultGroup = 32

// layout is the byte geometry of a payload, derived from a header.
type layout struct {
	codec         Codec
	s             Shape
	kg, vg        int
	nSink         int // sink rows in this block (tokens 0..nSink-1)
	n             int // elements of K (= of V)
	rowBytes      int // KIVI: bytes per packed (layer, token, head) row
	params, codes int // bytes per tensor; for KIVI params is K's (see vparams)
	sinks         int // bytes of sink exceptions per tensor
	tensor, total int // params+codes; whole payload
}

// newLayout computes the geometry. The caller has checked the shape against
// the limits, so no product overflows int on 64-bit platforms.
func newLayout(c Codec, s Shape, kg, vg, nSink int) layout {
	L := layout{codec: c, s: s, kg: kg, vg: vg, nSink: nSink}
	L.n = s.Layers * s.Tokens * s.KVHeads * s.HeadDim
	rows := s.Layers * s.Tokens * s.KVHeads
	switch c {
	case F16, BF16:
		L.codes = 2 * L.n
	case FP8E4M3:
		L.params = 4 * s.Layers * s.KVHeads
		L.codes = L.n
	case Int8:
		L.params = 2 * rows
		L.codes = L.n
	case Int4, Int2:
		b := c.kivi()
		L.rowBytes = (s.HeadDim*b + 7) / 8
		L.codes = rows * L.rowBytes
		// The K and V parameter blocks differ in shape but not always in
		// size; params holds K's, vparams V's.
		L.params = 4 * s.Layers * ceilDiv(s.Tokens, kg) * s.KVHeads * s.HeadDim
	}
	L.sinks = 2 * s.Layers * nSink * s.KVHeads * s.HeadDim
	L.tensor = L.params + L.codes
	L.total = 2*L.tensor + 2*L.sinks
	if c.kivi() != 0 {
		L.total += L.vparams() - L.params
	}
	return L
}

// vparams is the size of V's parameter block (differs from K's only for KIVI).
func (L layout) vparams() int {
	if L.codec.kivi() != 0 {
		return 4 * L.s.Layers * L.s.Tokens * L.s.KVHeads * ceilDiv(L.s.HeadDim, L.vg)
	}
	return L.params
}

// Offsets of the four sections; see docs/block-format.md "Payload".
func (L layout) kParams() (int, int) { return 0, L.params }
func (L layout) kCodes() (int, int)  { return L.params, L.params + L.codes }
func (L layout) vParams() (int, int) {
	o := L.params + L.codes
	return o, o + L.vparams()
}
func (L layout) vCodes() (int, int) {
	_, o := L.vParams()
	return o, o + L.codes
}
func (L layout) kSinks() (int, int) {
	_, o := L.vCodes()
	return o, o + L.sinks
}
func (L layout) vSinks() (int, int) {
	_, o := L.kSinks()
	return o, o + L.sinks
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// groups returns the KIVI group sizes Encode writes for a shape: 32, or the
// whole extent when it is shorter. Other codecs have no groups (0).
func groups(c Codec, s Shape) (kg, vg int) {
	if c.kivi() == 0 {
		return 0, 0
	}
	return min(DefaultGroup, s.Tokens), min(DefaultGroup, s.HeadDim)
}

// EncodedSize returns the exact size in bytes, header included, of the block
// Encode produces for codec c, shape s and sinkTokensInBlock sink rows (the
// number of tokens of the block whose absolute position is below the sink
// count, see SinkTokensInBlock). It returns 0 when c is unknown or the shape
// or sink count is outside the limits, so callers can't over-allocate.
func EncodedSize(c Codec, s Shape, sinkTokensInBlock int) int {
	if !c.Valid() || s.check() != nil || sinkTokensInBlock < 0 || sinkTokensInBlock > s.Tokens || sinkTokensInBlock > MaxSinks {
		return 0
	}
	kg, vg := groups(c, s)
	return HeaderSize + newLayout(c, s, kg, vg, sinkTokensInBlock).total
}

// SinkTokensInBlock returns how many tokens of a block starting at absolute
// position startPos with the given token count fall below the sequence-level
// sink count sinks, i.e. are stored as f16 exceptions.
func SinkTokensInBlock(sinks int, startPos uint32, tokens int) int {
	if sinks <= 0 || uint64(startPos) >= uint64(sinks) {
		return 0
	}
	return min(sinks-int(startPos), tokens)
}

// BytesPerTokenBlock is the block size BytesPerToken assumes.
const BytesPerTokenBlock = 64

// BytesPerToken returns the stored bytes per token (K and V, all layers) of
// codec c, including the header and the scale/zero overhead amortized over a
// 64-token block, excluding sink exceptions (they exist only in the first
// block of a sequence). It is what the memory calculator multiplies by
// token counts. It returns 0 for unknown codecs or shapes outside the limits.
func BytesPerToken(c Codec, layers, kvHeads, headDim int) float64 {
	n := EncodedSize(c, Shape{Tokens: BytesPerTokenBlock, Layers: layers, KVHeads: kvHeads, HeadDim: headDim}, 0)
	return float64(n) / BytesPerTokenBlock
}
