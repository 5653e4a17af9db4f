package model

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// Model holds a configuration and its weights, kept in their file
// encoding (see weight). It is immutable after construction and safe for
// concurrent use.
type Model struct {
	cfg     Config
	name    string
	embed   *weight // [Vocab][Dim]
	layers  []layer
	outNorm []float32 // [Dim]
	output  *weight   // [Vocab][Dim]; aliases embed when tied
	tied    bool

	// mapping is the read-only memory holding the GGUF file the raw
	// weights point into (a private huge-page copy, or the file's mmap; nil
	// when they live on the heap); released when the Model is collected.
	mapping []byte

	tok      tokenizer.Tokenizer
	template tokenizer.Template
	vocab    *tokenizer.Vocab // a synthetic model's BPE vocabulary, for WriteGGUF; nil otherwise

	digestOnce sync.Once
	digest     [32]byte

	// kvFree holds the KV buffers of released sequences for Reserve to
	// reuse (see Sequence.Release).
	kvFree kvPool
}

// layer holds one transformer block's weights; matrices are row-major
// [out][in]. wk and wv are nil for CLA consumer layers.
type layer struct {
	attnNorm []float32 // [Dim]
	wq       *weight   // [Heads*HeadDim][Dim]
	wk, wv   *weight   // [KVHeads*HeadDim][Dim]
	// bq, bk, bv are the qwen2 projection biases (nil for llama; bk, bv
	// also nil on CLA consumer layers).
	bq, bk, bv []float32
	wo         *weight   // [Dim][Heads*HeadDim]
	ffnNorm    []float32 // [Dim]
	wGate, wUp *weight   // [FFNDim][Dim]
	wDown      *weight   // [Dim][FFNDim]
}

// Config returns the model's configuration.
func (m *Model) Config() Config { return m.cfg }

// Name returns the model name (general.name, or the synthetic model's name).
func (m *Model) Name() string { return m.name }

// Tokenizer returns the tokenizer that goes with the model.
func (m *Model) Tokenizer() tokenizer.Tokenizer { return m.tok }

// ChatTemplate returns the chat template that goes with the model.
func (m *Model) ChatTemplate() tokenizer.Template { return m.template }

// Info describes everything that makes this model's KV incompatible with
// another's; the worker hashes it (plus block size and tenant) into a cache
// namespace.
type Info struct {
	Name          string
	WeightsDigest [32]byte // SHA-256 over all weights, see WeightsDigest
	Layers        int
	KVLayers      int // layers that produce (and store) KV
	Heads         int
	KVHeads       int
	HeadDim       int
	Vocab         int
	ContextLen    int
	RopeTheta     float64
	RopeScaling   string  // "none" or "linear"
	RopeScale     float64 // linear factor, 1 when RopeScaling is "none"
	KeysPostRoPE  bool    // always true: cached keys are rotated
	CLA           bool
	KVDType       string // "f16": KV values are f16-representable
	Arch          string // "llama" or "qwen2"
	// SlidingWindow is the attention window in positions, 0 for full
	// attention. It changes what every later position computes, so it is
	// part of the namespace.
	SlidingWindow int
}

// Info returns the model's cache-compatibility description. The first call
// computes the weights digest.
func (m *Model) Info() Info {
	scaling := "none"
	if m.cfg.ropeScale() != 1 {
		scaling = "linear"
	}
	return Info{
		Name:          m.name,
		WeightsDigest: m.WeightsDigest(),
		Layers:        m.cfg.Layers,
		KVLayers:      m.cfg.KVLayers(),
		Heads:         m.cfg.Heads,
		KVHeads:       m.cfg.KVHeads,
		HeadDim:       m.cfg.HeadDim,
		Vocab:         m.cfg.Vocab,
		ContextLen:    m.cfg.ContextLen,
		RopeTheta:     m.cfg.RopeTheta,
		RopeScaling:   scaling,
		RopeScale:     m.cfg.ropeScale(),
		KeysPostRoPE:  true,
		CLA:           m.cfg.CLA,
		KVDType:       "f16",
		Arch:          m.cfg.arch(),
		SlidingWindow: m.cfg.window(),
	}
}

// KVBytesPerToken returns the bytes of K and V per token in f16.
func (m *Model) KVBytesPerToken() int { return 2 * 2 * m.cfg.KVLayers() * m.cfg.KVDim() }

// WeightsDigest returns SHA-256 over every tensor in GGUF name order: for
// each, its name, its ggml dims and its float32 values (little-endian bits,
// after dequantization). Computed once, on first use.
func (m *Model) WeightsDigest() [32]byte {
	m.digestOnce.Do(func() {
		h := sha256.New()
		buf := make([]byte, 0, 64<<10)
		var row []float32
		for _, t := range m.tensors() {
			fmt.Fprintf(h, "%s%v", t.name, t.dims)
			row = slices.Grow(row[:0], t.w.cols)[:t.w.cols]
			for r := range t.w.rows {
				t.w.row(r, row)
				for _, v := range row {
					buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
					if len(buf) == cap(buf) {
						h.Write(buf)
						buf = buf[:0]
					}
				}
			}
			h.Write(buf)
			buf = buf[:0]
		}
		copy(m.digest[:], h.Sum(nil))
	})
	return m.digest
}

// namedTensor is a weight with its GGUF name and ggml-order dims.
type namedTensor struct {
	name string
	dims []uint64
	w    *weight
}

// vec wraps a 1-D float32 weight.
func vec(v []float32) *weight { return f32Weight(1, len(v), v) }

// tensors lists the weights with GGUF names, in canonical order.
func (m *Model) tensors() []namedTensor {
	c := m.cfg
	d, q, kv, f := uint64(c.Dim), uint64(c.Heads*c.HeadDim), uint64(c.KVDim()), uint64(c.FFNDim)
	ts := []namedTensor{{"token_embd.weight", []uint64{d, uint64(c.Vocab)}, m.embed}}
	for i, l := range m.layers {
		p := fmt.Sprintf("blk.%d.", i)
		bias := c.QKVBias()
		ts = append(ts,
			namedTensor{p + "attn_norm.weight", []uint64{d}, vec(l.attnNorm)},
			namedTensor{p + "attn_q.weight", []uint64{d, q}, l.wq})
		if bias {
			ts = append(ts, namedTensor{p + "attn_q.bias", []uint64{q}, vec(l.bq)})
		}
		if l.wk != nil {
			ts = append(ts,
				namedTensor{p + "attn_k.weight", []uint64{d, kv}, l.wk},
				namedTensor{p + "attn_v.weight", []uint64{d, kv}, l.wv})
			if bias {
				ts = append(ts,
					namedTensor{p + "attn_k.bias", []uint64{kv}, vec(l.bk)},
					namedTensor{p + "attn_v.bias", []uint64{kv}, vec(l.bv)})
			}
		}
		ts = append(ts,
			namedTensor{p + "attn_output.weight", []uint64{q, d}, l.wo},
			namedTensor{p + "ffn_norm.weight", []uint64{d}, vec(l.ffnNorm)},
			namedTensor{p + "ffn_gate.weight", []uint64{d, f}, l.wGate},
			namedTensor{p + "ffn_up.weight", []uint64{d, f}, l.wUp},
			namedTensor{p + "ffn_down.weight", []uint64{f, d}, l.wDown})
	}
	ts = append(ts, namedTensor{"output_norm.weight", []uint64{d}, vec(m.outNorm)})
	if !m.tied {
		ts = append(ts, namedTensor{"output.weight", []uint64{d, uint64(c.Vocab)}, m.output})
	}
	return ts
}
