package client

import (
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// view is an immutable snapshot of the placement nodes (every member that
// is not ejected), swapped atomically on each health or DNS change so
// placement never takes a lock.
type view struct {
	ranking
	state    []vstate // by ranking index
	replicas int
	warmUp   time.Duration
}

type vstate struct {
	warmFrom time.Time // zero: not warming
	suspect  bool
}

// newView ranks nodes; state gives each address's health.
func newView(addrs []string, state map[string]vstate, replicas int, warmUp time.Duration) *view {
	v := &view{ranking: newRanking(addrs, nil), replicas: replicas, warmUp: warmUp}
	v.state = make([]vstate, len(v.addrs))
	for i, a := range v.addrs {
		v.state[i] = state[a]
	}
	return v
}

// livePicker is the default Picker: rendezvous ranking over the live view.
type livePicker struct{ m *membership }

// Owners implements Picker: the R heaviest live nodes. Writes go to all of
// them, warming and suspect ones included, so a node that just joined
// fills up with exactly the keys it owns.
func (p livePicker) Owners(key prefix.Key, dst []string) []string {
	v := p.m.view.Load()
	return v.owners(key, v.replicas, dst)
}

// ReadOwners implements ReadPicker. Slow start: the first R nodes are the
// heaviest *ready* nodes, where a node is ready when it is healthy, or
// warming and this key has ramped onto it; after them come the write
// owners that were passed over (warming or suspect), as fallbacks.
//
// A warming node becomes ready for a key once warmth (elapsed/WarmUp,
// 0→1) exceeds a per-(key, node) hash in [0,1), so its share of reads
// grows linearly and deterministically: a key that moved stays moved, and
// until it moves its reads go where its blocks were before the node
// joined (the node that the newcomer displaced).
func (p livePicker) ReadOwners(key prefix.Key, dst []string) []string {
	v := p.m.view.Load()
	var ids [32]int32
	var buf [16]ranked
	order, _ := v.readOrder(key, ids[:0], buf[:0])
	dst = dst[:0]
	for _, i := range order {
		dst = append(dst, v.addrs[i])
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
