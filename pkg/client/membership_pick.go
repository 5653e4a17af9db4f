package client

import (
	"encoding/binary"
	"slices"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// view is an immutable snapshot of the placement nodes (every member that
// is not ejected), swapped atomically on each health or DNS change so
// placement never takes a lock.
type view struct {
	nodes    []vnode // sorted by addr
	replicas int
	warmUp   time.Duration
}

type vnode struct {
	addr     string
	seed     uint64
	warmFrom time.Time // zero: not warming
	suspect  bool
}

func (v *view) addrs() []string {
	out := make([]string, len(v.nodes))
	for i, n := range v.nodes {
		out[i] = n.addr
	}
	return out
}

// livePicker is the default Picker: rendezvous hashing over the live view,
// with the same weights as Rendezvous so both agree on owners.
type livePicker struct{ m *membership }

type cand struct {
	w uint64
	n *vnode
}

// rank returns the view's nodes by descending weight for key.
func (v *view) rank(key prefix.Key, buf []cand) []cand {
	k := binary.LittleEndian.Uint64(key[:8])
	cs := buf[:0]
	for i := range v.nodes {
		cs = append(cs, cand{mix(k ^ v.nodes[i].seed), &v.nodes[i]})
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
	return cs
}

// Owners implements Picker: the R heaviest live nodes. Writes go to all of
// them, warming and suspect ones included, so a node that just joined
// fills up with exactly the keys it owns.
func (p livePicker) Owners(key prefix.Key, dst []string) []string {
	v := p.m.view.Load()
	var buf [16]cand
	cs := v.rank(key, buf[:])
	dst = dst[:0]
	for i := 0; i < len(cs) && i < v.replicas; i++ {
		dst = append(dst, cs[i].n.addr)
	}
	return dst
}

// ReadOwners is the order reads ask nodes in. Slow start: the first R
// nodes are the heaviest *ready* nodes, where a node is ready when it is
// healthy, or warming and this key has ramped onto it; after them come the
// write owners that were passed over (warming or suspect), as fallbacks.
//
// A warming node becomes ready for a key once warmth (elapsed/WarmUp,
// 0→1) exceeds a per-(key, node) hash in [0,1), so its share of reads
// grows linearly and deterministically: a key that moved stays moved, and
// until it moves its reads go where its blocks were before the node
// joined (the node that the newcomer displaced).
func (p livePicker) ReadOwners(key prefix.Key, dst []string) []string {
	v := p.m.view.Load()
	var buf [16]cand
	cs := v.rank(key, buf[:])
	now := time.Now()
	k := binary.LittleEndian.Uint64(key[:8])
	dst = dst[:0]
	for _, c := range cs {
		if len(dst) == v.replicas {
			break
		}
		if c.n.suspect || (!c.n.warmFrom.IsZero() && !ramped(k, c.n.seed, warmth(c.n.warmFrom, v.warmUp, now))) {
			continue
		}
		dst = append(dst, c.n.addr)
	}
	ready := len(dst)
	for i := 0; i < len(cs) && i < v.replicas; i++ {
		if !slices.Contains(dst[:ready], cs[i].n.addr) {
			dst = append(dst, cs[i].n.addr)
		}
	}
	return dst
}

// warmth is how far slow start has progressed, 0 at admission to 1 after
// warmUp.
func warmth(from time.Time, warmUp time.Duration, now time.Time) float64 {
	if from.IsZero() || warmUp <= 0 {
		return 1
	}
	w := float64(now.Sub(from)) / float64(warmUp)
	return min(max(w, 0), 1)
}

// ramped reports whether a warming node takes the reads of key k yet.
func ramped(k, seed uint64, w float64) bool {
	if w >= 1 {
		return true
	}
	// An independent hash from the placement weight (different constant),
	// so the keys that move first are not the ones the node wins hardest.
	h := mix(k ^ seed ^ 0x5851f42d4c957f2d)
	return float64(h>>11)/(1<<53) < w
}
