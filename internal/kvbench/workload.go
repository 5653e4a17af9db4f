package kvbench

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// WorkloadConfig describes the prefix-sharing structure of a request
// stream. Zero fields take the defaults of DefaultWorkload.
type WorkloadConfig struct {
	Seed           uint64
	Requests       int     // length of the request stream
	SystemBlocks   int     // shared system prompt, in blocks, at the start of every request
	Documents      int     // documents that questions are asked about (RAG, code files)
	DocBlocks      int     // blocks of one document
	QuestionBlocks int     // full blocks of a question (unique per request, never shared)
	Conversations  int     // multi-turn conversations
	Turns          int     // turns of one conversation; later requests re-ask the last turn
	TurnBlocks     int     // blocks a turn adds (user message plus the answer)
	DocShare       float64 // fraction of requests about a document; the rest are chat turns
	ZipfS          float64 // popularity skew of documents and conversations (0 = uniform)
}

// DefaultWorkload is about 260 distinct blocks (~1.1 GiB of int8 Llama-3-8B
// KV) behind 256 requests.
func DefaultWorkload() WorkloadConfig {
	return WorkloadConfig{
		Seed: 1, Requests: 256, SystemBlocks: 4, Documents: 8, DocBlocks: 8, QuestionBlocks: 1,
		Conversations: 16, Turns: 4, TurnBlocks: 1, DocShare: 0.5, ZipfS: 1.1,
	}
}

func (c WorkloadConfig) withDefaults() WorkloadConfig {
	d := DefaultWorkload()
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.Requests, d.Requests)
	set(&c.SystemBlocks, d.SystemBlocks)
	set(&c.Documents, d.Documents)
	set(&c.DocBlocks, d.DocBlocks)
	set(&c.QuestionBlocks, d.QuestionBlocks)
	set(&c.Conversations, d.Conversations)
	set(&c.Turns, d.Turns)
	set(&c.TurnBlocks, d.TurnBlocks)
	if c.DocShare <= 0 || c.DocShare > 1 {
		c.DocShare = d.DocShare
	}
	if c.ZipfS < 0 {
		c.ZipfS = d.ZipfS
	}
	return c
}

// Block is one distinct block of the workload.
type Block struct {
	Key       prefix.Key
	Parent    prefix.Key // the previous block's key; zero for a chain's first block
	HasParent bool
	Pos       uint32 // absolute position of the block's first token
	Seed      uint64 // selects the block's content
}

// Request is one prompt: the chain of its full blocks, as indexes into
// Workload.Blocks, from the first.
type Request struct {
	Kind   string // "doc" or "chat"
	Target int    // the document or conversation
	Blocks []int
}

// Workload is a deterministic request stream over a set of distinct blocks.
type Workload struct {
	Config   WorkloadConfig
	NS       prefix.Namespace
	Blocks   []Block
	Requests []Request
}

// Segment ids: what content a run of blocks holds. Equal segment ids give
// equal tokens, so equal prefixes give equal keys.
const (
	segSystem   = 1 << 60
	segDoc      = 2 << 60
	segQuestion = 3 << 60
	segTurn     = 4 << 60
)

// vocab is Llama-3's vocabulary size.
const vocab = 128256

// GenerateWorkload builds the request stream for ns with blocks of
// blockTokens tokens. The same arguments always give the same workload.
func GenerateWorkload(ns prefix.Namespace, blockTokens int, cfg WorkloadConfig) *Workload {
	cfg = cfg.withDefaults()
	w := &Workload{Config: cfg, NS: ns}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x776f726b))
	docs := NewZipf(cfg.Documents, cfg.ZipfS)
	convs := NewZipf(cfg.Conversations, cfg.ZipfS)
	nextTurn := make([]int, cfg.Conversations)
	index := map[prefix.Key]int{}
	tokens := make([]uint32, blockTokens)

	for r := range cfg.Requests {
		type seg struct {
			id     uint64
			blocks int
		}
		segs := []seg{{segSystem, cfg.SystemBlocks}}
		req := Request{}
		if rng.Float64() < cfg.DocShare {
			d := docs.Sample(rng)
			req.Kind, req.Target = "doc", d
			segs = append(segs, seg{segDoc | uint64(d), cfg.DocBlocks}, seg{segQuestion | uint64(r), cfg.QuestionBlocks})
		} else {
			c := convs.Sample(rng)
			req.Kind, req.Target = "chat", c
			t := nextTurn[c]
			nextTurn[c] = min(t+1, cfg.Turns-1)
			for i := 0; i <= t; i++ {
				segs = append(segs, seg{segTurn | uint64(c)<<16 | uint64(i), cfg.TurnBlocks})
			}
		}
		parent, hasParent := ns.Root(), false
		pos := uint32(0)
		for _, s := range segs {
			for j := range s.blocks {
				fillTokens(tokens, cfg.Seed, s.id, j)
				key := prefix.Next(parent, tokens)
				i, ok := index[key]
				if !ok {
					i = len(w.Blocks)
					index[key] = i
					b := Block{Key: key, HasParent: hasParent, Pos: pos, Seed: binary.LittleEndian.Uint64(key[:8])}
					if hasParent {
						b.Parent = parent
					}
					w.Blocks = append(w.Blocks, b)
				}
				req.Blocks = append(req.Blocks, i)
				parent, hasParent = key, true
				pos += uint32(blockTokens)
			}
		}
		w.Requests = append(w.Requests, req)
	}
	return w
}

// fillTokens writes the tokens of block j of segment seg.
func fillTokens(dst []uint32, seed, seg uint64, j int) {
	rng := rand.New(rand.NewPCG(seed^seg, uint64(j)))
	for i := range dst {
		dst[i] = rng.Uint32N(vocab)
	}
}

// Keys returns the keys of a request's chain.
func (w *Workload) Keys(r Request) []prefix.Key {
	out := make([]prefix.Key, len(r.Blocks))
	for i, b := range r.Blocks {
		out[i] = w.Blocks[b].Key
	}
	return out
}

// TotalBlocks is the number of blocks the request stream asks for.
func (w *Workload) TotalBlocks() int {
	n := 0
	for _, r := range w.Requests {
		n += len(r.Blocks)
	}
	return n
}

// IdealHitRatio is the fraction of requested blocks that an unbounded
// cache, fed every request's blocks after serving it, would hold: blocks
// already seen by an earlier request of the stream.
func (w *Workload) IdealHitRatio() float64 {
	seen := make([]bool, len(w.Blocks))
	hit, total := 0, 0
	for _, r := range w.Requests {
		// A prefix cache serves the longest run of cached blocks from the
		// start; a cached block after a miss is recomputed anyway.
		run := true
		for _, b := range r.Blocks {
			if run && seen[b] {
				hit++
			} else {
				run = false
			}
			total++
		}
		for _, b := range r.Blocks {
			seen[b] = true
		}
	}
	if total == 0 {
		return 0
	}
	return float64(hit) / float64(total)
}

func (w *Workload) String() string {
	c := w.Config
	return fmt.Sprintf("%d requests (%.0f%% about %d documents of %d blocks, the rest %d conversations of up to %d turns), %d-block system prompt, zipf s=%.2f: %d distinct blocks, %d requested",
		c.Requests, 100*c.DocShare, c.Documents, c.DocBlocks, c.Conversations, c.Turns, c.SystemBlocks, c.ZipfS, len(w.Blocks), w.TotalBlocks())
}
