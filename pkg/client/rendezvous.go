package client

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"slices"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Rendezvous (highest random weight) ranking, the one placement function:
// Rendezvous (picker.go) and the live membership view (membership_pick.go)
// both rank with it, so they always agree on owners.

// weightFunc is a node's weight for a key: k is the key's first 8 bytes
// (keys are SHA-256 outputs, so any 8 bytes are uniform), seed the node's
// seed. Tests inject their own.
type weightFunc func(k, seed uint64) uint64

// mixWeight is the default weight: the splitmix64 finaliser of k^seed, one
// strong mix being enough for uniform k.
func mixWeight(k, seed uint64) uint64 { return mix(k ^ seed) }

func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// nodeSeed is a node's seed: FNV-1a of its address.
func nodeSeed(addr string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(addr))
	return h.Sum64()
}

// keyWord is the part of a key the weights use.
func keyWord(key prefix.Key) uint64 { return binary.LittleEndian.Uint64(key[:8]) }

// ranking is an immutable set of nodes, sorted by address, with their
// seeds computed once.
type ranking struct {
	weight weightFunc
	addrs  []string
	seeds  []uint64
}

// newRanking ranks over addrs (copied and sorted); weight nil means
// mixWeight.
func newRanking(addrs []string, weight weightFunc) ranking {
	if weight == nil {
		weight = mixWeight
	}
	r := ranking{weight: weight, addrs: slices.Clone(addrs)}
	slices.Sort(r.addrs)
	r.seeds = make([]uint64, len(r.addrs))
	for i, a := range r.addrs {
		r.seeds[i] = nodeSeed(a)
	}
	return r
}

// ranked is one node (an index into the ranking) and its weight for a key.
type ranked struct {
	w uint64
	i int
}

// rank returns every node by descending weight for key, in buf's storage.
// Equal weights fall back to address order, so every client agrees.
func (r *ranking) rank(key prefix.Key, buf []ranked) []ranked {
	k := keyWord(key)
	cs := buf[:0]
	for i, s := range r.seeds {
		cs = append(cs, ranked{r.weight(k, s), i})
	}
	slices.SortFunc(cs, func(a, b ranked) int {
		if c := cmp.Compare(b.w, a.w); c != 0 {
			return c
		}
		return cmp.Compare(a.i, b.i)
	})
	return cs
}

// owners appends the addresses of the first n nodes for key to dst[:0].
func (r *ranking) owners(key prefix.Key, n int, dst []string) []string {
	var buf [16]ranked
	cs := r.rank(key, buf[:])
	dst = dst[:0]
	for i := 0; i < len(cs) && i < n; i++ {
		dst = append(dst, r.addrs[cs[i].i])
	}
	return dst
}
