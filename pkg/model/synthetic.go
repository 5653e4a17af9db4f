package model

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// DefaultSeed seeds the embedded default model's weights.
const DefaultSeed = 0x6b76636163686531 // "kvcache1"

// DefaultOptions selects a variant of the embedded default model. The zero
// value (or nil) is the standard model.
type DefaultOptions struct {
	// CLA shares KV between adjacent layer pairs, halving KV per token.
	CLA bool
}

// Default returns the embedded default model: DefaultConfig shape with
// deterministic synthetic weights from DefaultSeed and the word-piece
// tokenizer (WordTokenizer), so a worker runs with nothing downloaded.
// What it generates is printable words in no meaningful order: the output
// projection favours whole word pieces and punctuation (see Synthetic).
// Each call builds a fresh copy (about 47 MB of weights; build once and
// share it).
func Default(opts *DefaultOptions) *Model {
	cfg := DefaultConfig()
	name := "kvcache-synthetic-10m"
	if opts != nil && opts.CLA {
		cfg.CLA = true
		name += "-cla"
	}
	wv := wordsOnce()
	m, err := synthetic(name, cfg, DefaultSeed, wv.tok, wv.vocab, func(id int) bool { return wv.output[id] }, 4, 0.5)
	if err != nil {
		panic(err) // DefaultConfig is valid by construction
	}
	return m
}

// Synthetic builds a model with deterministic pseudo-random weights: each
// matrix ~ N(0, 1/fan_in), embeddings ~ N(0, 1), norm weights near 1,
// qwen2 Q/K/V biases ~ N(0, 0.25). The
// output projection is untied; its rows for control tokens (ids >= 256) are
// damped so greedy decoding rarely emits them. The vocabulary must be
// tokenizer.ByteVocab (the byte-level tokenizer) or larger.
func Synthetic(name string, cfg Config, seed uint64) (*Model, error) {
	if cfg.Vocab < tokenizer.ByteVocab {
		return nil, fmt.Errorf("%w: synthetic vocab %d < %d", ErrBadConfig, cfg.Vocab, tokenizer.ByteVocab)
	}
	return synthetic(name, cfg, seed, tokenizer.Bytes{}, tokenizer.Vocab{}, func(id int) bool { return id < 256 }, 2, 0)
}

// synthetic builds a synthetic model with tokenizer tok (whose vocabulary,
// vocab, WriteGGUF writes when it has tokens). Output rows are
// ~ N(0, (outStd/sqrt(Dim))^2), so logits have a standard deviation of
// about outStd; the rows of ids keep rejects are damped 20-fold. From each
// kept row, selfPenalty*outStd/sqrt(Dim) times the token's own embedding
// is subtracted: the last hidden state leans towards the input token's
// embedding, so this keeps greedy decoding of random weights from
// repeating one token forever (0 leaves the rows as drawn).
func synthetic(name string, cfg Config, seed uint64, tok tokenizer.Tokenizer, vocab tokenizer.Vocab, keep func(id int) bool, outStd, selfPenalty float64) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if tok.VocabSize() > cfg.Vocab {
		return nil, fmt.Errorf("%w: synthetic vocab %d < tokenizer's %d", ErrBadConfig, cfg.Vocab, tok.VocabSize())
	}
	cfg.RopeScale = cfg.ropeScale()
	cfg.Arch = cfg.arch() // as Load reports it
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	normal := func(n int, std float64) []float32 {
		s := make([]float32, n)
		for i := range s {
			s[i] = float32(r.NormFloat64() * std)
		}
		return s
	}
	ones := func(n int) []float32 {
		s := normal(n, 0.05)
		for i := range s {
			s[i] += 1
		}
		return s
	}
	d, q, kv, f := cfg.Dim, cfg.Heads*cfg.HeadDim, cfg.KVDim(), cfg.FFNDim
	inv := func(fanIn int) float64 { return 1 / math.Sqrt(float64(fanIn)) }
	m := &Model{cfg: cfg, name: name, tok: tok, template: tokenizer.ChatML{}}
	if len(vocab.Tokens) > 0 {
		m.vocab = &vocab
	}
	emb := normal(cfg.Vocab*d, 1)
	m.embed = f32Weight(cfg.Vocab, d, emb)
	for l := 0; l < cfg.Layers; l++ {
		var ly layer
		ly.attnNorm = ones(d)
		ly.wq = f32Weight(q, d, normal(q*d, inv(d)))
		if cfg.producesKV(l) {
			ly.wk = f32Weight(kv, d, normal(kv*d, inv(d)))
			ly.wv = f32Weight(kv, d, normal(kv*d, inv(d)))
		}
		if cfg.QKVBias() {
			// Biases of the size of the projections' outputs (~1), so a
			// forward pass that dropped them would be visibly wrong.
			ly.bq = normal(q, 0.5)
			if ly.wk != nil {
				ly.bk, ly.bv = normal(kv, 0.5), normal(kv, 0.5)
			}
		}
		ly.wo = f32Weight(d, q, normal(d*q, inv(q)))
		ly.ffnNorm = ones(d)
		ly.wGate = f32Weight(f, d, normal(f*d, inv(d)))
		ly.wUp = f32Weight(f, d, normal(f*d, inv(d)))
		ly.wDown = f32Weight(d, f, normal(d*f, inv(f)))
		m.layers = append(m.layers, ly)
	}
	m.outNorm = ones(d)
	out := normal(cfg.Vocab*d, outStd*inv(d))
	m.output = f32Weight(cfg.Vocab, d, out)
	for id := 0; id < cfg.Vocab; id++ {
		row := out[id*d : (id+1)*d]
		if keep(id) {
			if selfPenalty != 0 {
				e := emb[id*d : (id+1)*d]
				for i := range row {
					row[i] -= float32(selfPenalty * outStd * inv(d) * float64(e[i]))
				}
			}
			continue
		}
		for i := range row {
			row[i] *= 0.05
		}
	}
	return m, nil
}
