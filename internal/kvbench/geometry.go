package kvbench

import (
	"fmt"
	"math/rand/v2"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Geometry is the shape of the KV cache being benchmarked: which model's
// KV, how many tokens a block holds and how it is encoded.
type Geometry struct {
	Model       string // names the namespace; any string
	Layers      int    // KV-producing layers
	KVHeads     int
	HeadDim     int
	BlockTokens int
	Codec       kvblock.Codec
}

// Llama3_8B is the default geometry: Llama-3-8B (32 layers, 8 KV heads,
// head dim 128), 64-token blocks, int8. A block is about 4 MiB.
func Llama3_8B() Geometry {
	return Geometry{Model: "meta-llama/Meta-Llama-3-8B", Layers: 32, KVHeads: 8, HeadDim: 128, BlockTokens: 64, Codec: kvblock.Int8}
}

// Shape is the kvblock shape of one block.
func (g Geometry) Shape() kvblock.Shape {
	return kvblock.Shape{Tokens: g.BlockTokens, Layers: g.Layers, KVHeads: g.KVHeads, HeadDim: g.HeadDim}
}

// Namespace derives the geometry's namespace (the codec is not part of it).
func (g Geometry) Namespace() (prefix.Namespace, error) {
	return prefix.NewNamespace(prefix.Params{
		Model: g.Model, WeightsDigest: "kvbench", Layers: g.Layers, KVHeads: g.KVHeads, HeadDim: g.HeadDim,
		RopeTheta: 500000, KeysPostRoPE: true, BlockTokens: g.BlockTokens,
	})
}

// BlockBytes is the encoded size of a block without sink exceptions.
func (g Geometry) BlockBytes() int { return kvblock.EncodedSize(g.Codec, g.Shape(), 0) }

// TokenBytes is the encoded bytes per token, header and scales amortized.
func (g Geometry) TokenBytes() float64 { return float64(g.BlockBytes()) / float64(g.BlockTokens) }

func (g Geometry) String() string {
	return fmt.Sprintf("%s: %d layers x %d kv heads x %d head dim, %d-token blocks, %s (%s/block)",
		g.Model, g.Layers, g.KVHeads, g.HeadDim, g.BlockTokens, g.Codec, fmtBytes(float64(g.BlockBytes())))
}

// Check reports a geometry that cannot be encoded.
func (g Geometry) Check() error {
	if g.BlockBytes() == 0 {
		return fmt.Errorf("kvbench: geometry %d layers x %d heads x %d dim x %d tokens with codec %v is outside the block format's limits",
			g.Layers, g.KVHeads, g.HeadDim, g.BlockTokens, g.Codec)
	}
	return nil
}

// Encoder turns a workload block into its encoded bytes. Block contents are
// deterministic: a window, chosen by the block's seed, of a pool of
// normally distributed values rounded to f16 (what an engine hands over),
// so every block is distinct without generating millions of random numbers
// per block.
type Encoder struct {
	g    Geometry
	k, v []float32
}

const poolSlack = 1 << 14

// NewEncoder builds the value pool for g (deterministic in seed).
func NewEncoder(g Geometry, seed uint64) *Encoder {
	n := g.Shape().Elements() + poolSlack
	rng := rand.New(rand.NewPCG(seed, 0x6b76))
	e := &Encoder{g: g, k: make([]float32, n), v: make([]float32, n)}
	for i := range n {
		e.k[i] = kvblock.RoundF16(float32(rng.NormFloat64()))
		e.v[i] = kvblock.RoundF16(float32(rng.NormFloat64() * 0.5))
	}
	return e
}

// Encode encodes b into dst (reusing its capacity).
func (e *Encoder) Encode(dst []byte, b Block) ([]byte, error) {
	n := e.g.Shape().Elements()
	ko := int(b.Seed % poolSlack)
	vo := int((b.Seed >> 20) % poolSlack)
	kv := &kvblock.KV{Shape: e.g.Shape(), K: e.k[ko : ko+n], V: e.v[vo : vo+n]}
	return kvblock.Encode(dst, kv, kvblock.Meta{
		Codec: e.g.Codec, StartPos: b.Pos, RoPE: true, Parent: b.Parent, HasParent: b.HasParent, Sinks: -1,
	})
}
