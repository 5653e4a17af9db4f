package model

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/kvcache/kvcache/internal/half"
)

// maxChunk bounds the rows processed at once by Prefill (and so its scratch
// memory, about 20 KiB per row for the bench model). Every chunk streams all
// weights once (F16 and the K-quants are decoded per chunk), so larger
// chunks amortise that better. Chunking does not change results.
const maxChunk = 512

// Sequence is one token sequence being processed by a Model, with its KV
// cache paged in blocks of BlockTokens tokens. Block i covers tokens
// [i*B, (i+1)*B). A Sequence is not safe for concurrent use.
type Sequence struct {
	m     *Model
	block int
	n     int
	// k and v hold, per KV layer, [token][kvHead][headDim] f16-representable
	// float32 values; keys are post-RoPE.
	k, v [][]float32
}

// NewSequence starts an empty sequence whose KV is paged in blocks of
// blockTokens tokens (clamped to at least 1).
func (m *Model) NewSequence(blockTokens int) *Sequence {
	kl := m.cfg.KVLayers()
	return &Sequence{m: m, block: max(1, blockTokens), k: make([][]float32, kl), v: make([][]float32, kl)}
}

// Len returns the number of tokens in the sequence.
func (s *Sequence) Len() int { return s.n }

// BlockTokens returns the block size B.
func (s *Sequence) BlockTokens() int { return s.block }

// FullBlocks returns the number of complete blocks, Len()/B.
func (s *Sequence) FullBlocks() int { return s.n / s.block }

// KVLayers returns the number of KV-producing layers (Layers, or Layers/2
// with CLA); Export/Import blocks carry exactly these layers.
func (s *Sequence) KVLayers() int { return s.m.cfg.KVLayers() }

// BlockLen returns the length of the k (and of the v) slice of one block:
// KVLayers * B * KVHeads * HeadDim.
func (s *Sequence) BlockLen() int { return s.m.cfg.KVLayers() * s.block * s.m.cfg.KVDim() }

// Truncate drops tokens from position n on, e.g. to discard a generated
// tail. It is a no-op when n >= Len().
func (s *Sequence) Truncate(n int) {
	s.n = max(0, min(n, s.n))
	// Also drops KV a failed forward pass appended beyond Len.
	kd := s.m.cfg.KVDim()
	for l := range s.k {
		s.k[l] = s.k[l][:min(len(s.k[l]), s.n*kd)]
		s.v[l] = s.v[l][:min(len(s.v[l]), s.n*kd)]
	}
}

// Reserve makes room for tokens tokens (at most ContextLen) in every
// layer's KV at once, so that importing a long cached prefix block by
// block, or prefilling it, does not grow (copy and re-zero) the KV again
// and again. It never shrinks and does not change Len.
func (s *Sequence) Reserve(tokens int) {
	kd := s.m.cfg.KVDim()
	want := min(tokens, s.m.cfg.ContextLen) * kd
	if s.n == 0 && len(s.k) > 0 && cap(s.k[0]) == 0 {
		// A fresh sequence: take released buffers that fit, already
		// faulted in, instead of allocating (and zeroing) them again.
		if k, v, ok := s.m.kvFree.take(want); ok {
			s.k, s.v = k, v
		}
	}
	for l := range s.k {
		s.k[l] = reserve(s.k[l], want)
		s.v[l] = reserve(s.v[l], want)
	}
}

func reserve(x []float32, n int) []float32 {
	if cap(x) >= n {
		return x
	}
	y := make([]float32, len(x), n)
	copy(y, x)
	return y
}

// Release empties the sequence and hands its KV buffers to the model for
// a later Reserve to reuse, so that requests in a row do not allocate and
// zero their KV again. The caller must not use the sequence's KV (nor
// anything still reading it) after Release; the sequence itself stays
// usable, empty. At most kvPoolMax buffer sets are kept.
func (s *Sequence) Release() {
	if len(s.k) > 0 && cap(s.k[0]) > 0 {
		s.m.kvFree.put(s.k, s.v)
	}
	kl := len(s.k)
	s.k, s.v, s.n = make([][]float32, kl), make([][]float32, kl), 0
}

// kvPoolMax bounds the released KV buffer sets a model keeps: one per
// forward pass that can run at once is enough for back-to-back requests.
const kvPoolMax = 2

// kvPool is a small bounded free list of per-layer KV buffers.
type kvPool struct {
	mu   sync.Mutex
	sets []kvSet
}

type kvSet struct{ k, v [][]float32 }

func (p *kvPool) put(k, v [][]float32) {
	for l := range k {
		k[l], v[l] = k[l][:0], v[l][:0]
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sets) < kvPoolMax {
		p.sets = append(p.sets, kvSet{k, v})
		return
	}
	// Keep the larger buffers: they fit more requests.
	for i := range p.sets {
		if cap(p.sets[i].k[0]) < cap(k[0]) {
			p.sets[i] = kvSet{k, v}
			return
		}
	}
}

// take returns a set whose every buffer has room for want values.
func (p *kvPool) take(want int) (k, v [][]float32, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, s := range p.sets {
		if fits(s.k, want) && fits(s.v, want) {
			p.sets = slices.Delete(p.sets, i, i+1)
			return s.k, s.v, true
		}
	}
	return nil, nil, false
}

func fits(x [][]float32, want int) bool {
	for _, b := range x {
		if cap(b) < want {
			return false
		}
	}
	return true
}

// ExportBlock copies full block i into k and v, each of length BlockLen(),
// laid out [kvLayer][token][kvHead][headDim].
func (s *Sequence) ExportBlock(i int, k, v []float32) error {
	bl := s.BlockLen()
	if i < 0 || (i+1)*s.block > s.n {
		return fmt.Errorf("%w: export of block %d needs %d tokens, have %d", ErrBadBlock, i, (i+1)*s.block, s.n)
	}
	if len(k) != bl || len(v) != bl {
		return fmt.Errorf("%w: export buffers have %d/%d values, want %d", ErrBadBlock, len(k), len(v), bl)
	}
	per := s.block * s.m.cfg.KVDim()
	for l := range s.k {
		copy(k[l*per:(l+1)*per], s.k[l][i*per:(i+1)*per])
		copy(v[l*per:(l+1)*per], s.v[l][i*per:(i+1)*per])
	}
	return nil
}

// ExportBlockHalf is ExportBlock writing f16 words: k and v, each
// 2*BlockLen() bytes, receive little-endian binary16 words in the same
// layout, as the f16 codec stores them (kvblock.EncodeHalf takes them),
// converted in one pass without a float32 copy. The KV's values are f16,
// so the words are exact; an infinite or NaN value (a computation that
// overflowed f16) is written as the f16 codec writes it: saturated to
// ±65504, NaN as 0.
func (s *Sequence) ExportBlockHalf(i int, k, v []byte) error {
	bl := s.BlockLen()
	if i < 0 || (i+1)*s.block > s.n {
		return fmt.Errorf("%w: export of block %d needs %d tokens, have %d", ErrBadBlock, i, (i+1)*s.block, s.n)
	}
	if len(k) != 2*bl || len(v) != 2*bl {
		return fmt.Errorf("%w: export buffers have %d/%d bytes, want %d", ErrBadBlock, len(k), len(v), 2*bl)
	}
	per := s.block * s.m.cfg.KVDim()
	for l := range s.k {
		active.toHalf(k[2*l*per:2*(l+1)*per], s.k[l][i*per:(i+1)*per])
		active.toHalf(v[2*l*per:2*(l+1)*per], s.v[l][i*per:(i+1)*per])
	}
	return nil
}

// toHalf writes src as little-endian f16 words into dst (2*len(src)
// bytes), as half.FromFloat32Sat: F16C where the CPU has it, the
// saturating conversion where a value is not a finite f16.
func (ks *kernels) toHalf(dst []byte, src []float32) {
	dst = dst[:2*len(src)]
	i, finite := 0, true
	if ks.halfOut != nil {
		i, finite = ks.halfOut(dst, src)
	}
	if !finite {
		i = 0 // rare: redo it all, saturating
	}
	for ; i < len(src); i++ {
		w := half.FromFloat32Sat(src[i])
		dst[2*i], dst[2*i+1] = byte(w), byte(w>>8)
	}
}

// ImportBlock appends block i from k and v (layout as ExportBlock). It must
// be the block right after the current length (Len() == i*B), and the
// sequence must have room for it. Values are rounded to f16, as if computed;
// a value that does not round to a finite f16 (beyond ±65504 or NaN, which
// would poison attention) fails it with ErrBadBlock and imports nothing.
// Len advances by B.
func (s *Sequence) ImportBlock(i int, k, v []float32) error {
	bl := s.BlockLen()
	if i < 0 || i*s.block != s.n {
		return fmt.Errorf("%w: import of block %d at length %d (want length %d)", ErrBadBlock, i, s.n, i*s.block)
	}
	if len(k) != bl || len(v) != bl {
		return fmt.Errorf("%w: import buffers have %d/%d values, want %d", ErrBadBlock, len(k), len(v), bl)
	}
	if s.n+s.block > s.m.cfg.ContextLen {
		return fmt.Errorf("%w: %d + %d tokens > %d", ErrContextFull, s.n, s.block, s.m.cfg.ContextLen)
	}
	per := s.block * s.m.cfg.KVDim()
	for l := range s.k {
		var okK, okV bool
		s.k[l], okK = appendRounded(s.k[l], k[l*per:(l+1)*per])
		s.v[l], okV = appendRounded(s.v[l], v[l*per:(l+1)*per])
		if !okK || !okV {
			s.Truncate(s.n) // drops this block's layers imported so far
			return fmt.Errorf("%w: block %d has values outside the f16 range", ErrBadBlock, i)
		}
	}
	s.n += s.block
	return nil
}

// ImportBlockHalf is ImportBlock for a block given as f16 words: k and v
// hold 2*BlockLen() bytes each, little-endian IEEE binary16 in ExportBlock's
// layout (the f16 codec's K and V payload, docs/block-format.md). Each word
// converts exactly into the sequence's KV in one pass, so the result is the
// bits ImportBlock gives for the same values decoded to float32. A word
// that is an infinity or a NaN (exponent all ones) fails it with
// ErrBadBlock and imports nothing.
func (s *Sequence) ImportBlockHalf(i int, k, v []byte) error {
	bl := s.BlockLen()
	if i < 0 || i*s.block != s.n {
		return fmt.Errorf("%w: import of block %d at length %d (want length %d)", ErrBadBlock, i, s.n, i*s.block)
	}
	if len(k) != 2*bl || len(v) != 2*bl {
		return fmt.Errorf("%w: import buffers have %d/%d bytes, want %d", ErrBadBlock, len(k), len(v), 2*bl)
	}
	if s.n+s.block > s.m.cfg.ContextLen {
		return fmt.Errorf("%w: %d + %d tokens > %d", ErrContextFull, s.n, s.block, s.m.cfg.ContextLen)
	}
	per := s.block * s.m.cfg.KVDim()
	for l := range s.k {
		var okK, okV bool
		s.k[l], okK = appendHalf(s.k[l], k[2*l*per:2*(l+1)*per])
		s.v[l], okV = appendHalf(s.v[l], v[2*l*per:2*(l+1)*per])
		if !okK || !okV {
			s.Truncate(s.n) // drops this block's layers imported so far
			return fmt.Errorf("%w: block %d has infinite or NaN values", ErrBadBlock, i)
		}
	}
	s.n += s.block
	return nil
}

// appendHalf appends the f16 words of src converted to float32 to dst and
// reports whether every word is finite.
func appendHalf(dst []float32, src []byte) ([]float32, bool) {
	n := len(dst)
	dst = slices.Grow(dst, len(src)/2)[:n+len(src)/2]
	return dst, active.halfTo(dst[n:], src)
}

// halfTo sets dst[i] to the float32 value of the little-endian f16 word
// src[2i:2i+2] (len(dst) words) and reports whether every word is finite:
// F16C where the CPU has it, else the conversion table.
func (ks *kernels) halfTo(dst []float32, src []byte) bool {
	src = src[:2*len(dst)]
	i, finite := 0, true
	if ks.half != nil {
		i, finite = ks.half(dst, src)
	}
	for ; i < len(dst); i++ {
		w := uint16(src[2*i]) | uint16(src[2*i+1])<<8
		if w&0x7c00 == 0x7c00 {
			finite = false
		}
		dst[i] = half.ToFloat32(w)
	}
	return finite
}

// appendRounded appends src to dst rounded to f16, in one pass, and
// reports whether every rounded value is finite.
func appendRounded(dst, src []float32) ([]float32, bool) {
	n := len(dst)
	dst = slices.Grow(dst, len(src))[:n+len(src)]
	return dst, active.roundTo(dst[n:], src)
}

// roundHalf rounds every value to the nearest f16 (ties to even), in place.
func roundHalf(x []float32) { active.roundTo(x, x) }

// roundTo sets dst[i] to src[i] rounded to the nearest f16 (ties to even)
// and reports whether every rounded value is finite (a value beyond f16's
// range, or NaN, is not): the F16C conversions where the CPU has them
// (kernel_amd64.s), else a bit-level path for f16's normal range (round
// the mantissa from 23 to 10 bits) that gives the same result as
// converting to f16 and back, with subnormals, overflow and NaN taking the
// conversion. Restoring fetched blocks spends most of its time here. dst
// may be src.
func (ks *kernels) roundTo(dst, src []float32) bool {
	dst = dst[:len(src)]
	i, finite := 0, true
	if ks.round != nil {
		i, finite = ks.round(dst, src)
	}
	for ; i < len(src); i++ {
		v := src[i]
		b := math.Float32bits(v)
		if a := b & 0x7fffffff; a >= minNormalF16Bits && a < maxF16Bits {
			dst[i] = math.Float32frombits((b + 0xfff + (b>>13)&1) &^ 0x1fff)
			continue
		}
		r := half.Round(v)
		dst[i] = r
		finite = finite && math.Float32bits(r)&0x7f800000 != 0x7f800000
	}
	return finite
}

const (
	minNormalF16Bits = 0x38800000 // 2^-14 as float32 bits
	maxF16Bits       = 0x477fe000 // 65504, the largest finite f16
)

// Prefill appends tokens and returns the logits (length Vocab) of the last
// one. On error (including context cancellation) the sequence is left as it
// was before the call.
func (s *Sequence) Prefill(ctx context.Context, tokens []int) ([]float32, error) {
	cfg := s.m.cfg
	if len(tokens) == 0 {
		return nil, fmt.Errorf("%w: no tokens to prefill", ErrBadToken)
	}
	if s.n+len(tokens) > cfg.ContextLen {
		return nil, fmt.Errorf("%w: %d + %d tokens > %d", ErrContextFull, s.n, len(tokens), cfg.ContextLen)
	}
	for i, t := range tokens {
		if t < 0 || t >= cfg.Vocab {
			return nil, fmt.Errorf("%w: token %d at index %d (vocab %d)", ErrBadToken, t, i, cfg.Vocab)
		}
	}
	start := s.n
	var logits []float32
	for len(tokens) > 0 {
		c := min(len(tokens), maxChunk)
		var err error
		logits, err = s.forward(ctx, tokens[:c], len(tokens) == c)
		if err != nil {
			s.Truncate(start)
			return nil, err
		}
		tokens = tokens[c:]
	}
	return logits, nil
}

// Decode appends one token and returns its logits.
func (s *Sequence) Decode(ctx context.Context, token int) ([]float32, error) {
	return s.Prefill(ctx, []int{token})
}

// forward runs the transformer over toks at positions Len().., appending
// their KV, and returns the last row's logits when wantLogits.
func (s *Sequence) forward(ctx context.Context, toks []int, wantLogits bool) ([]float32, error) {
	m := s.m
	c := m.cfg
	n, d, qd, kd, f := len(toks), c.Dim, c.Heads*c.HeadDim, c.KVDim(), c.FFNDim
	p0 := s.n

	x := make([]float32, n*d)
	for i, t := range toks {
		m.embed.row(t, x[i*d:(i+1)*d])
	}
	xn := make([]float32, n*d)
	tmp := make([]float32, n*d)
	q := make([]float32, n*qd)
	att := make([]float32, n*qd)
	kb := make([]float32, n*kd)
	vb := make([]float32, n*kd)
	g := make([]float32, n*f)
	u := make([]float32, n*f)
	cos, sin := ropeTable(p0, n, c.HeadDim, c.RopeTheta, c.ropeScale())

	for li := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("model: prefill: %w", err)
		}
		ly := &m.layers[li]
		rmsNorm(xn, x, ly.attnNorm, n, d, c.NormEps)
		matmul(q, xn, ly.wq, n)
		addBias(q, ly.bq, n)
		rope(q, n, c.Heads, c.HeadDim, cos, sin)
		kl := c.kvLayer(li)
		if ly.wk != nil {
			matmul(kb, xn, ly.wk, n)
			matmul(vb, xn, ly.wv, n)
			addBias(kb, ly.bk, n)
			addBias(vb, ly.bv, n)
			rope(kb, n, c.KVHeads, c.HeadDim, cos, sin)
			// Computed KV beyond f16's range stays infinite, as it was.
			s.k[kl], _ = appendRounded(s.k[kl], kb)
			s.v[kl], _ = appendRounded(s.v[kl], vb)
		}
		attentionWindow(att, q, s.k[kl], s.v[kl], p0, n, c.Heads, c.KVHeads, c.HeadDim, c.window())
		matmul(tmp, att, ly.wo, n)
		addInto(x, tmp)

		rmsNorm(xn, x, ly.ffnNorm, n, d, c.NormEps)
		matmul(g, xn, ly.wGate, n)
		matmul(u, xn, ly.wUp, n)
		swiglu(g, u)
		matmul(tmp, g, ly.wDown, n)
		addInto(x, tmp)
	}
	s.n += n
	if !wantLogits {
		return nil, nil
	}
	last := x[(n-1)*d : n*d]
	rmsNorm(xn[:d], last, m.outNorm, 1, d, c.NormEps)
	logits := make([]float32, c.Vocab)
	matmul(logits, xn[:d], m.output, 1)
	return logits, nil
}
