package prefix

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// namespaceDomain separates namespace digests from every other SHA-256 use.
// Changing anything about the encoding below requires a new domain string
// and a new version of docs/keys.md.
const namespaceDomain = "kvcache/namespace/v1"

// Params is everything that makes KV from two engines incompatible. Two
// engines that agree on every field may share blocks. The codec is not part
// of it: every block's header says how it is encoded.
type Params struct {
	Model         string  // model identity, e.g. "meta-llama/Meta-Llama-3-8B"
	WeightsDigest string  // digest or revision of the weights, e.g. hex SHA-256
	Layers        int     // KV-producing layers stored per block
	KVHeads       int     // key/value heads per layer
	HeadDim       int     // elements per head
	RopeTheta     float64 // RoPE base frequency
	RopeScaling   string  // scaling description, e.g. "linear:2" or "" for none
	KeysPostRoPE  bool    // keys are stored with RoPE already applied
	BlockTokens   int     // tokens per block
	Tenant        string  // isolation salt; "" when caches are shared by all
	// SlidingWindow is the attention window in positions (Mistral-style),
	// 0 for full attention. It is hashed only when positive, so namespaces
	// of full-attention models are unchanged from before it existed.
	SlidingWindow int
}

// ErrParams reports Params that cannot name a namespace.
var ErrParams = errors.New("prefix: invalid namespace parameters")

// Validate reports the first field that cannot be right.
func (p Params) Validate() error {
	switch {
	case p.Model == "":
		return fmt.Errorf("%w: empty model", ErrParams)
	case p.Layers < 1, p.KVHeads < 1, p.HeadDim < 1:
		return fmt.Errorf("%w: shape %d layers x %d kv heads x %d head dim", ErrParams, p.Layers, p.KVHeads, p.HeadDim)
	case p.BlockTokens < 1:
		return fmt.Errorf("%w: block of %d tokens", ErrParams, p.BlockTokens)
	case math.IsNaN(p.RopeTheta) || math.IsInf(p.RopeTheta, 0):
		return fmt.Errorf("%w: rope theta %v", ErrParams, p.RopeTheta)
	case p.SlidingWindow < 0 || p.SlidingWindow > math.MaxUint32:
		return fmt.Errorf("%w: sliding window %d", ErrParams, p.SlidingWindow)
	}
	return nil
}

// NewNamespace derives the namespace digest of p as docs/keys.md specifies:
// SHA-256 over the domain string and each field in declaration order,
// strings as a little-endian uint32 length then bytes, integers as
// little-endian uint32, floats as little-endian IEEE-754 float64 bits and
// booleans as one byte 0 or 1.
func NewNamespace(p Params) (Namespace, error) {
	if err := p.Validate(); err != nil {
		return Namespace{}, err
	}
	h := sha256.New()
	var b []byte
	str := func(s string) {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	u32 := func(v int) { b = binary.LittleEndian.AppendUint32(b, uint32(v)) }
	str(namespaceDomain)
	str(p.Model)
	str(p.WeightsDigest)
	u32(p.Layers)
	u32(p.KVHeads)
	u32(p.HeadDim)
	b = binary.LittleEndian.AppendUint64(b, math.Float64bits(p.RopeTheta))
	str(p.RopeScaling)
	if p.KeysPostRoPE {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	u32(p.BlockTokens)
	str(p.Tenant)
	if p.SlidingWindow > 0 {
		u32(p.SlidingWindow) // field 12, present only for windowed models
	}
	h.Write(b)
	var n Namespace
	h.Sum(n[:0])
	return n, nil
}

// WithTenant returns the namespace of the same parameters for another
// tenant. A server with authentication derives the tenant from the caller's
// identity and calls this; it never trusts a tenant named by the client.
func WithTenant(ns Namespace, tenant string) Namespace {
	if tenant == "" {
		return ns
	}
	h := sha256.New()
	h.Write([]byte("kvcache/tenant/v1"))
	h.Write(ns[:])
	h.Write([]byte(tenant))
	var out Namespace
	h.Sum(out[:0])
	return out
}
