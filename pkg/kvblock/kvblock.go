// Package kvblock defines the on-disk/on-wire format of a KV-cache block: a
// fixed 64-byte header (shape, codec, positions, parent key, CRC32C) and a
// payload produced by one of six codecs (raw f16/bf16, fp8 E4M3, int8, and
// the KIVI int4/int2 layouts). The byte-exact specification, with test
// vectors, is docs/block-format.md; this package is its reference
// implementation.
//
// Everything here is pure computation over byte and float32 slices: no I/O.
// Encode and Decode reuse caller buffers and allocate nothing per element.
//
// # Non-finite input
//
// Encode never fails on values and never writes a NaN or infinity. Every
// codec treats NaN as 0 and saturates ±Inf and out-of-range values to the
// largest finite value of what it stores: ±65504 for f16 and for the
// integer and fp8 codecs (whose input is clamped to the f16 range first, the
// range the engine's KV lives in), ±3.39e38 for bf16. Decode is bit-faithful:
// a crafted block whose codes or scales are non-finite decodes to non-finite
// floats, but never panics.
package kvblock

import (
	"encoding/binary"
	"fmt"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Shape is the extent of a block. Layers counts KV-producing layers only.
type Shape struct{ Tokens, Layers, KVHeads, HeadDim int }

// Elements returns Layers*Tokens*KVHeads*HeadDim, the length of KV.K and KV.V.
func (s Shape) Elements() int { return s.Layers * s.Tokens * s.KVHeads * s.HeadDim }

// KV holds one block in memory. K and V each have length Shape.Elements(),
// laid out [layer][token][head][dim], i.e. element (l,t,h,d) is at
// ((l*Tokens+t)*KVHeads+h)*HeadDim+d. That is the layout the engine's
// paged cache exports per layer, so a block is a cheap gather.
type KV struct {
	Shape Shape
	K, V  []float32
}

// Meta is what the caller chooses when encoding a block.
type Meta struct {
	Codec     Codec
	StartPos  uint32 // absolute position of the block's first token
	RoPE      bool   // keys are post-RoPE (informational; codecs don't depend on it)
	Parent    prefix.Key
	HasParent bool
	// Sinks is the sequence-level count S of attention-sink positions:
	// tokens at absolute position < S are stored a second time as exact
	// f16 exceptions. -1 selects Codec.DefaultSinks(); 0 disables.
	Sinks int
}

// Encode encodes kv as a block and returns it, reusing dst's capacity
// (dst[:0] is the start; a larger buffer is allocated only when cap(dst) is
// short). It fails with ErrUnsupported for an unknown codec and ErrInvalid
// for a shape outside the limits, K/V lengths that don't match the shape,
// or Sinks outside [-1, 255]. Values never cause an error (see the package
// documentation for NaN/Inf).
func Encode(dst []byte, kv *KV, m Meta) ([]byte, error) {
	if !m.Codec.Valid() {
		return dst[:0], fmt.Errorf("encode: codec %d: %w", uint8(m.Codec), ErrUnsupported)
	}
	if kv == nil {
		return dst[:0], fmt.Errorf("encode: nil KV: %w", ErrInvalid)
	}
	s := kv.Shape
	if err := s.check(); err != nil {
		return dst[:0], fmt.Errorf("encode: %w", err)
	}
	if n := s.Elements(); len(kv.K) != n || len(kv.V) != n {
		return dst[:0], fmt.Errorf("encode: len(K)=%d len(V)=%d, shape needs %d: %w", len(kv.K), len(kv.V), n, ErrInvalid)
	}
	if uint64(m.StartPos)+uint64(s.Tokens) > 1<<32 {
		return dst[:0], fmt.Errorf("encode: start_pos %d overflows: %w", m.StartPos, ErrInvalid)
	}
	sinks := m.Sinks
	if sinks == -1 {
		sinks = m.Codec.DefaultSinks()
	}
	if sinks < 0 || sinks > MaxSinks {
		return dst[:0], fmt.Errorf("encode: sinks %d: %w", m.Sinks, ErrInvalid)
	}
	h := Header{
		Version: Version, Codec: m.Codec, RoPE: m.RoPE, Sinks: sinks, Shape: s,
		StartPos: m.StartPos, HasParent: m.HasParent,
	}
	if m.HasParent {
		h.Parent = m.Parent
	}
	h.KGroup, h.VGroup = groups(m.Codec, s)
	L := h.layout()
	h.PayloadLen = L.total
	size := HeaderSize + L.total

	out := dst[:0]
	if cap(out) < size {
		out = make([]byte, size)
	} else {
		out = out[:size]
	}
	putHeader(out, &h)
	p := out[HeaderSize:]
	a, b := L.kParams()
	_, c := L.kCodes()
	encodeTensor(&L, kv.K, p[a:b], p[b:c], true)
	a, b = L.vParams()
	_, c = L.vCodes()
	encodeTensor(&L, kv.V, p[a:b], p[b:c], false)
	a, b = L.kSinks()
	encodeSinks(&L, kv.K, p[a:b])
	a, b = L.vSinks()
	encodeSinks(&L, kv.V, p[a:b])
	binary.LittleEndian.PutUint32(out[60:], blockCRC(out))
	return out, nil
}

// Decode verifies block (as Inspect does) and decodes it into kv, setting
// kv.Shape and reusing the capacity of kv.K and kv.V. New slices are
// allocated only when the capacity is short, and never larger than the
// header limits allow (MaxElements each). On error kv is left unchanged.
func Decode(block []byte, kv *KV) (Header, error) {
	h, err := Inspect(block)
	if err != nil {
		return h, err
	}
	L := h.layout()
	kv.Shape = h.Shape
	kv.K = growFloats(kv.K, L.n)
	kv.V = growFloats(kv.V, L.n)
	p := block[HeaderSize:]
	a, b := L.kParams()
	_, c := L.kCodes()
	decodeTensor(&L, p[a:b], p[b:c], kv.K, true)
	a, b = L.vParams()
	_, c = L.vCodes()
	decodeTensor(&L, p[a:b], p[b:c], kv.V, false)
	a, b = L.kSinks()
	decodeSinks(&L, p[a:b], kv.K)
	a, b = L.vSinks()
	decodeSinks(&L, p[a:b], kv.V)
	return h, nil
}

func growFloats(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float32, n)
}

func encodeTensor(L *layout, x []float32, params, codes []byte, key bool) {
	switch L.codec {
	case F16:
		encodeF16(codes, x)
	case BF16:
		encodeBF16(codes, x)
	case FP8E4M3:
		encodeFP8(L, x, params, codes)
	case Int8:
		encodeInt8(L, x, params, codes)
	case Int4, Int2:
		if key {
			encodeKIVIKeys(L, x, params, codes)
		} else {
			encodeKIVIValues(L, x, params, codes)
		}
	}
}

func decodeTensor(L *layout, params, codes []byte, y []float32, key bool) {
	switch L.codec {
	case F16:
		decodeF16(y, codes)
	case BF16:
		decodeBF16(y, codes)
	case FP8E4M3:
		decodeFP8(L, params, codes, y)
	case Int8:
		decodeInt8(L, params, codes, y)
	case Int4, Int2:
		if key {
			decodeKIVIKeys(L, params, codes, y)
		} else {
			decodeKIVIValues(L, params, codes, y)
		}
	}
}

// Sink exceptions: for each layer, the first nSink token rows of that layer
// are contiguous in [layer][token][head][dim] order, so each layer
// contributes one run of nSink*KVHeads*HeadDim f16 values.
func encodeSinks(L *layout, x []float32, dst []byte) {
	run := L.nSink * L.s.KVHeads * L.s.HeadDim
	if run == 0 {
		return
	}
	per := L.s.Tokens * L.s.KVHeads * L.s.HeadDim
	for l := 0; l < L.s.Layers; l++ {
		encodeF16(dst[2*l*run:2*(l+1)*run], x[l*per:l*per+run])
	}
}

func decodeSinks(L *layout, src []byte, y []float32) {
	run := L.nSink * L.s.KVHeads * L.s.HeadDim
	if run == 0 {
		return
	}
	per := L.s.Tokens * L.s.KVHeads * L.s.HeadDim
	for l := 0; l < L.s.Layers; l++ {
		decodeF16(y[l*per:l*per+run], src[2*l*run:2*(l+1)*run])
	}
}
