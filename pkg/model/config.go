// Package model is the transformer engine run by the inference worker: a
// Llama-architecture decoder (RMSNorm, RoPE, grouped-query attention,
// SwiGLU) in pure Go, fp32 arithmetic on the CPU, with a paged f16 KV cache
// whose blocks map one-to-one onto kvcache blocks.
//
// # Determinism
//
// The engine computes every token's arithmetic in exactly the same order no
// matter how a prompt is split: every matrix product element is one
// sequential float32 reduction over the input dimension (see matmul.go),
// attention for a query sums over keys in increasing position, and K/V are
// rounded to float16 the moment they are computed (attention always reads
// the rounded values, also inside one prefill). Hence prefilling N tokens at
// once, token by token with Decode, or importing the KV of the first blocks
// exported from another sequence and prefilling the rest all give
// bit-identical logits.
//
// # Concurrency
//
// A Model is immutable and safe for concurrent use by many Sequences. A
// Sequence is not safe for concurrent use. Prefill and Decode spread work
// over runtime.NumCPU goroutines.
package model

import (
	"errors"
	"fmt"
)

// Sentinel errors.
var (
	// ErrContextFull means the tokens would exceed Config.ContextLen; the
	// sequence is left unchanged.
	ErrContextFull = errors.New("model: context length exceeded")
	// ErrBadToken means a token id is outside [0, Vocab).
	ErrBadToken = errors.New("model: token id out of range")
	// ErrBadBlock means an Export/Import block index, size or position is
	// wrong (not a full block, or not the block right after the current
	// length for Import).
	ErrBadBlock = errors.New("model: bad KV block")
	// ErrBadConfig means a Config is inconsistent.
	ErrBadConfig = errors.New("model: bad config")
	// ErrBadWeights means a GGUF file lacks a tensor or has one of the wrong
	// shape for its declared configuration.
	ErrBadWeights = errors.New("model: bad weights")
)

// Config holds a model's hyperparameters.
type Config struct {
	Layers     int     // transformer blocks
	Dim        int     // embedding width
	Heads      int     // query heads
	KVHeads    int     // key/value heads (grouped-query attention); divides Heads
	HeadDim    int     // width of one head (even)
	FFNDim     int     // SwiGLU hidden width
	Vocab      int     // vocabulary size
	RopeTheta  float64 // RoPE base frequency (llama.rope.freq_base)
	RopeScale  float64 // linear RoPE scaling factor: positions are divided by it; 0 or 1 means none
	NormEps    float64 // RMSNorm epsilon
	ContextLen int     // maximum sequence length in tokens
	// CLA enables cross-layer attention: layers 2i and 2i+1 share one KV,
	// produced by layer 2i. Requires an even Layers.
	CLA bool
	// Arch is the GGUF architecture: "llama" (or "") or "qwen2", which is
	// Llama plus learned biases on the Q, K and V projections.
	Arch string
	// SlidingWindow, when positive, restricts each query to the last
	// SlidingWindow positions, its own included (Mistral-style; GGUF
	// <arch>.attention.sliding_window). 0 means full causal attention.
	SlidingWindow int
}

// Architectures Load and Synthetic accept.
const (
	ArchLlama = "llama"
	ArchQwen2 = "qwen2"
)

// arch returns the architecture name, "llama" when unset.
func (c Config) arch() string {
	if c.Arch == "" {
		return ArchLlama
	}
	return c.Arch
}

// QKVBias reports whether the architecture has Q/K/V projection biases.
func (c Config) QKVBias() bool { return c.arch() == ArchQwen2 }

// window returns the effective attention window: 0 (none) when the window
// covers the whole context anyway.
func (c Config) window() int {
	if c.SlidingWindow >= c.ContextLen {
		return 0
	}
	return c.SlidingWindow
}

// KVLayers returns the number of KV-producing layers.
func (c Config) KVLayers() int {
	if c.CLA {
		return c.Layers / 2
	}
	return c.Layers
}

// KVDim returns KVHeads*HeadDim, the per-token width of K (and of V) in one
// KV layer.
func (c Config) KVDim() int { return c.KVHeads * c.HeadDim }

// producesKV reports whether layer l computes its own K and V.
func (c Config) producesKV(l int) bool { return !c.CLA || l%2 == 0 }

// kvLayer maps a layer to the KV layer it reads.
func (c Config) kvLayer(l int) int {
	if c.CLA {
		return l / 2
	}
	return l
}

func (c Config) ropeScale() float64 {
	if c.RopeScale == 0 {
		return 1
	}
	return c.RopeScale
}

// Validate checks that the dimensions are consistent.
func (c Config) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrBadConfig}, a...)...)
	}
	switch {
	case c.Layers <= 0 || c.Dim <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.FFNDim <= 0 || c.Vocab <= 0 || c.ContextLen <= 0:
		return bad("all dimensions must be positive: %+v", c)
	case c.Layers > 1024 || c.Dim > 1<<16 || c.FFNDim > 1<<18 || c.Vocab > 1<<22 || c.Heads > 1024 || c.HeadDim > 1024:
		return bad("dimensions too large: %+v", c)
	case c.Heads%c.KVHeads != 0:
		return bad("heads %d not a multiple of kv heads %d", c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return bad("head dim %d is odd", c.HeadDim)
	case c.CLA && c.Layers%2 != 0:
		return bad("CLA needs an even layer count, got %d", c.Layers)
	case !(c.RopeTheta > 0):
		return bad("rope theta %v", c.RopeTheta)
	case c.RopeScale < 0 || !(c.NormEps > 0):
		return bad("rope scale %v / norm eps %v", c.RopeScale, c.NormEps)
	case c.arch() != ArchLlama && c.arch() != ArchQwen2:
		return bad("architecture %q", c.Arch)
	case c.SlidingWindow < 0:
		return bad("sliding window %d", c.SlidingWindow)
	}
	return nil
}

// DefaultConfig is the shape of the embedded default model: about 11.7M
// parameters (~21 MFLOP per token), 3 KiB of f16 KV per token (1.5 KiB with
// CLA), and the vocabulary of WordTokenizer. Prefilling a token costs thousands of times more than fetching its
// int8 KV locally, while a demo of dozens of requests stays well under two
// minutes on two cores.
func DefaultConfig() Config {
	return Config{
		Layers:     6,
		Dim:        384,
		Heads:      6,
		KVHeads:    2,
		HeadDim:    64,
		FFNDim:     1024,
		Vocab:      WordTokenizer().VocabSize(),
		RopeTheta:  10000,
		NormEps:    1e-5,
		ContextLen: 4096,
	}
}

// TinyConfig is a very small shape for tests (fast even under -race).
func TinyConfig() Config {
	return Config{
		Layers:     2,
		Dim:        64,
		Heads:      4,
		KVHeads:    2,
		HeadDim:    16,
		FFNDim:     96,
		Vocab:      260,
		RopeTheta:  10000,
		NormEps:    1e-5,
		ContextLen: 512,
	}
}
