package client

import (
	"encoding/binary"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Picker chooses the nodes that own a key, most preferred first. The client
// asks owners in that order and writes to all of them. Implementations must
// be safe for concurrent use.
type Picker interface {
	Owners(key prefix.Key, dst []string) []string
}

// Rendezvous is highest-random-weight placement: every node gets a
// pseudo-random weight for each key and the R heaviest own it. Adding or
// removing a node moves only the keys it wins or owned, and every client
// computes the same owners with no coordination.
type Rendezvous struct {
	replicas int
	mu       sync.RWMutex
	nodes    []rnode
}

type rnode struct {
	addr string
	seed uint64
}

// NewRendezvous places keys on replicas of nodes (fewer when there are fewer
// nodes). replicas < 1 means 1.
func NewRendezvous(nodes []string, replicas int) *Rendezvous {
	r := &Rendezvous{replicas: max(replicas, 1)}
	r.SetNodes(nodes)
	return r
}

// SetNodes replaces the set of candidate nodes, e.g. after a health change.
func (r *Rendezvous) SetNodes(nodes []string) {
	ns := make([]rnode, 0, len(nodes))
	for _, a := range nodes {
		h := fnv.New64a()
		h.Write([]byte(a))
		ns = append(ns, rnode{addr: a, seed: h.Sum64()})
	}
	slices.SortFunc(ns, func(a, b rnode) int {
		if a.addr < b.addr {
			return -1
		}
		if a.addr > b.addr {
			return 1
		}
		return 0
	})
	r.mu.Lock()
	r.nodes = ns
	r.mu.Unlock()
}

// Nodes returns the candidate nodes.
func (r *Rendezvous) Nodes() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, len(r.nodes))
	for i, n := range r.nodes {
		out[i] = n.addr
	}
	return out
}

// mix is the splitmix64 finaliser: keys are already SHA-256 outputs, so one
// strong mix of key and node seed is a sufficient weight.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// Owners implements Picker.
func (r *Rendezvous) Owners(key prefix.Key, dst []string) []string {
	k := binary.LittleEndian.Uint64(key[:8])
	r.mu.RLock()
	defer r.mu.RUnlock()
	type cand struct {
		w    uint64
		addr string
	}
	var buf [8]cand
	cs := buf[:0]
	for _, n := range r.nodes {
		cs = append(cs, cand{mix(k ^ n.seed), n.addr})
	}
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.w > b.w:
			return -1
		case a.w < b.w:
			return 1
		}
		return 0
	})
	dst = dst[:0]
	for i := 0; i < len(cs) && i < r.replicas; i++ {
		dst = append(dst, cs[i].addr)
	}
	return dst
}
