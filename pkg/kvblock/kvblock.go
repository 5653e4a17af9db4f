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
//
// # SIMD build
//
// Built with GOEXPERIMENT=simd (Go 1.26's experimental simd/archsimd, e.g.
// GOEXPERIMENT=simd go build ./...), the int8 and KIVI int4/int2 encoders
// use AVX-512 loops for the min/max scans, quantization and packing, about
// twice the scalar encode throughput. They produce the same bytes as the
// scalar code, which remains the default build and the fallback at run
// time on CPUs without AVX-512 (F+CD+BW+DQ+VL) or on other architectures.
//
// # Vector decode
//
// Decode of int4 (KIVI keys and values), int8 and f16 payloads runs Go
// assembly loops on amd64 in every build, AVX-512 or AVX2+F16C chosen at
// run time (DecoderName says which), with the portable loops as the
// fallback on other CPUs, other architectures and with the purego build
// tag. They give the same bits as the portable code (decode.go has the
// contract; as everywhere in this package, NaN payloads are not pinned). int2 and the odd shapes (head dims that
// are not a multiple of the vector width, padded rows) decode portably.
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
	h, err := newHeader(kv.Shape, len(kv.K), len(kv.V), m)
	if err != nil {
		return dst[:0], err
	}
	L := h.layout()
	out := startBlock(dst, &h)
	binary.LittleEndian.PutUint32(out[60:], encodePayload(&L, kv, out))
	return out, nil
}

// EncodeHalf is Encode for the f16 codec with the values already f16: k
// and v hold the K and V codes, each Elements() little-endian binary16
// words in KV's element order (what Sequence.ExportBlockHalf writes), and
// go into the payload as they are. m.Codec must be F16 and m.Sinks -1 or 0
// (sink exceptions would repeat values as f16: for f16 they are never
// written). Encode never writes an infinity or a NaN; neither may k or v
// hold one, or the block decodes to it. Otherwise it fails as Encode does.
func EncodeHalf(dst []byte, s Shape, k, v []byte, m Meta) ([]byte, error) {
	if len(k) != 2*s.Elements() || len(v) != 2*s.Elements() {
		return dst[:0], fmt.Errorf("encode half: %d/%d bytes of codes, shape needs %d: %w", len(k), len(v), 2*s.Elements(), ErrInvalid)
	}
	return EncodeHalfFunc(dst, s, m, func(pk, pv []byte) error {
		copy(pk, k)
		copy(pv, v)
		return nil
	})
}

// EncodeHalfFunc is EncodeHalf with the codes written in place: fill gets
// the block's K and V code sections (2*Elements() bytes each, to be filled
// entirely, e.g. by Sequence.ExportBlockHalf) and the checksum is computed
// after it returns. An error from fill is returned as it is.
func EncodeHalfFunc(dst []byte, s Shape, m Meta, fill func(k, v []byte) error) ([]byte, error) {
	if m.Codec != F16 || (m.Sinks != -1 && m.Sinks != 0) {
		return dst[:0], fmt.Errorf("encode half: codec %v with sinks %d: %w", m.Codec, m.Sinks, ErrInvalid)
	}
	h, err := newHeader(s, s.Elements(), s.Elements(), m)
	if err != nil {
		return dst[:0], err
	}
	L := h.layout()
	out := startBlock(dst, &h)
	p := out[HeaderSize:]
	a, b := L.kCodes()
	c, d := L.vCodes()
	if err := fill(p[a:b:b], p[c:d:d]); err != nil {
		return dst[:0], err
	}
	binary.LittleEndian.PutUint32(out[60:], blockCRC(out))
	return out, nil
}

// newHeader checks a block to encode (shape s, nk and nv values of K and
// V) and returns its header, CRC not set.
func newHeader(s Shape, nk, nv int, m Meta) (Header, error) {
	if err := s.check(); err != nil {
		return Header{}, fmt.Errorf("encode: %w", err)
	}
	if n := s.Elements(); nk != n || nv != n {
		return Header{}, fmt.Errorf("encode: len(K)=%d len(V)=%d, shape needs %d: %w", nk, nv, n, ErrInvalid)
	}
	if uint64(m.StartPos)+uint64(s.Tokens) > 1<<32 {
		return Header{}, fmt.Errorf("encode: start_pos %d overflows: %w", m.StartPos, ErrInvalid)
	}
	sinks := m.Sinks
	if sinks == -1 {
		sinks = m.Codec.DefaultSinks()
	}
	if sinks < 0 || sinks > MaxSinks {
		return Header{}, fmt.Errorf("encode: sinks %d: %w", m.Sinks, ErrInvalid)
	}
	h := Header{
		Version: Version, Codec: m.Codec, RoPE: m.RoPE, Sinks: sinks, Shape: s,
		StartPos: m.StartPos, HasParent: m.HasParent,
	}
	if m.HasParent {
		h.Parent = m.Parent
	}
	h.KGroup, h.VGroup = groups(m.Codec, s)
	h.PayloadLen = h.layout().total
	return h, nil
}

// startBlock returns dst resized to the block of header h (a new buffer
// when cap(dst) is short) with the header written, CRC aside.
func startBlock(dst []byte, h *Header) []byte {
	size := HeaderSize + h.PayloadLen
	out := dst[:0]
	if cap(out) < size {
		out = make([]byte, size)
	} else {
		out = out[:size]
	}
	putHeader(out, h)
	return out
}

// encodePayload encodes kv into the payload of out, whose header bytes
// [0,60) are already written, and returns the block's CRC (blockCRC(out)).
//
// The payload is written a chunk at a time and every chunk is checksummed
// right after it is written, while it is still in cache: a separate CRC
// pass over the finished block would read it all back from memory. A
// tensor's parameters and codes are written side by side, so each section
// keeps its own running CRC and the sections are combined in format order.
func encodePayload(L *layout, kv *KV, out []byte) uint32 {
	vzeroupper()
	p := out[HeaderSize:]
	crc := crcUpdate(0, out[:60])
	a, b := L.kParams()
	_, c := L.kCodes()
	cp, cc := encodeTensorCRC(L, kv.K, p[a:b], p[b:c], true)
	crc = crc32cCombine(crc32cCombine(crc, cp, b-a), cc, c-b)
	a, b = L.vParams()
	_, c = L.vCodes()
	cp, cc = encodeTensorCRC(L, kv.V, p[a:b], p[b:c], false)
	crc = crc32cCombine(crc32cCombine(crc, cp, b-a), cc, c-b)
	// The sink sections are written in order, one run per layer.
	a, b = L.kSinks()
	crc = encodeSinks(L, kv.K, p[a:b], crc)
	a, b = L.vSinks()
	return encodeSinks(L, kv.V, p[a:b], crc)
}

// chunkBytes is about how many payload bytes Encode writes between CRC
// updates: small enough to still be in L1/L2, large enough for the
// hardware CRC's three-way interleaved loop.
const chunkBytes = 32 << 10

// encodeTensorCRC encodes tensor x into params and codes (as encodeTensor
// does) in chunks of whole tokens of one layer, and returns the CRC32C of
// params and of codes. Every codec's sections are in (layer, token, ...)
// order, so consecutive chunks fill them front to back; a chunk is a run of
// key groups for KIVI (the key parameters span KGroup tokens) and a whole
// layer for fp8 (one scale per layer and head).
func encodeTensorCRC(L *layout, x []float32, params, codes []byte, key bool) (cp, cc uint32) {
	T, H, D := L.s.Tokens, L.s.KVHeads, L.s.HeadDim
	step := T
	if L.codec != FP8E4M3 {
		step = max(1, chunkBytes/max(1, L.codes/(L.s.Layers*T)))
		if L.codec.kivi() != 0 {
			step = max(1, step/L.kg) * L.kg
		}
	}
	var scratch []float32
	po, co := 0, 0
	for l := 0; l < L.s.Layers; l++ {
		for t0 := 0; t0 < T; t0 += step {
			t1 := min(T, t0+step)
			sub := newLayout(L.codec, Shape{Tokens: t1 - t0, Layers: 1, KVHeads: H, HeadDim: D}, L.kg, L.vg, min(max(L.nSink-t0, 0), t1-t0))
			np := sub.params
			if !key {
				np = sub.vparams()
			}
			ps := params[po : po+np]
			cs := codes[co : co+sub.codes]
			encodeTensor(&sub, x[(l*T+t0)*H*D:(l*T+t1)*H*D], ps, cs, key, &scratch)
			cp = crcUpdate(cp, ps)
			cc = crcUpdate(cc, cs)
			po += np
			co += sub.codes
		}
	}
	return cp, cc
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
	decodePayload(&h, block, kv)
	return h, nil
}

// DecodeVerified decodes a block already verified by Inspect or VerifySum
// (h is the header they returned) into kv, as Decode does, without parsing
// the header or computing the checksum again: a client that checked the
// block while it streamed in decodes it at codec speed. It fails only when
// block is not the size h describes.
func DecodeVerified(h *Header, block []byte, kv *KV) error {
	if len(block) != h.Size() || h.layout().total != h.PayloadLen {
		return fmt.Errorf("block of %d bytes, verified header says %d: %w", len(block), h.Size(), ErrInvalid)
	}
	decodePayload(h, block, kv)
	return nil
}

// F16Payload returns the K and V codes of a verified f16 block (h is the
// header Inspect, VerifySum or Decode returned for it): each Shape.Elements()
// little-endian IEEE binary16 words in KV's element order, the exact values
// Decode would give, without decoding them. They alias block. ok is false,
// and the caller decodes instead, for any other codec, for a block with
// sink exceptions (they override some of the codes), and when block is not
// the size h describes.
func F16Payload(h *Header, block []byte) (k, v []byte, ok bool) {
	if h.Codec != F16 || h.SinkTokens() != 0 || len(block) != h.Size() {
		return nil, nil, false
	}
	L := h.layout()
	if L.total != h.PayloadLen {
		return nil, nil, false
	}
	p := block[HeaderSize:]
	a, b := L.kCodes()
	c, d := L.vCodes()
	return p[a:b:b], p[c:d:d], true
}

// decodePayload decodes the payload of block, whose header h is valid.
func decodePayload(h *Header, block []byte, kv *KV) {
	L := h.layout()
	vzeroupper()
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
}

func growFloats(s []float32, n int) []float32 {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]float32, n)
}

func encodeTensor(L *layout, x []float32, params, codes []byte, key bool, scratch *[]float32) {
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
			encodeKIVIKeys(L, x, params, codes, scratch)
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
// encodeSinks also returns crc updated with dst.
func encodeSinks(L *layout, x []float32, dst []byte, crc uint32) uint32 {
	run := L.nSink * L.s.KVHeads * L.s.HeadDim
	if run == 0 {
		return crc
	}
	per := L.s.Tokens * L.s.KVHeads * L.s.HeadDim
	for l := 0; l < L.s.Layers; l++ {
		d := dst[2*l*run : 2*(l+1)*run]
		encodeF16(d, x[l*per:l*per+run])
		crc = crcUpdate(crc, d)
	}
	return crc
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
