package client

import (
	"cmp"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/kvcache/kvcache/pkg/prefix"
)

func testKeys(n int) []prefix.Key {
	out := make([]prefix.Key, n)
	for i := range out {
		out[i] = prefix.Key(sha256.Sum256(fmt.Appendf(nil, "k%d", i)))
	}
	return out
}

func TestRendezvousSpreadsEvenly(t *testing.T) {
	nodes := []string{"a:1", "b:1", "c:1", "d:1"}
	r := NewRendezvous(nodes, 2)
	counts := map[string]int{}
	const n = 20000
	for _, k := range testKeys(n) {
		os := r.Owners(k, nil)
		if len(os) != 2 || os[0] == os[1] {
			t.Fatalf("owners %v", os)
		}
		for _, o := range os {
			counts[o]++
		}
	}
	for _, a := range nodes {
		// Each node should own 2n/4 copies; allow 5%.
		if c := counts[a]; c < n/2*95/100 || c > n/2*105/100 {
			t.Errorf("node %s owns %d of %d copies", a, c, 2*n)
		}
	}
}

func TestRendezvousMovesOnlyWhatItMust(t *testing.T) {
	r := NewRendezvous([]string{"a:1", "b:1", "c:1", "d:1"}, 1)
	before := map[prefix.Key]string{}
	keys := testKeys(5000)
	for _, k := range keys {
		before[k] = r.Owners(k, nil)[0]
	}
	r.SetNodes([]string{"a:1", "b:1", "c:1"}) // d leaves
	for _, k := range keys {
		now := r.Owners(k, nil)[0]
		if before[k] != "d:1" && now != before[k] {
			t.Fatalf("key owned by %s moved to %s when d left", before[k], now)
		}
	}
	if got := len(NewRendezvous([]string{"a:1"}, 3).Owners(keys[0], nil)); got != 1 {
		t.Errorf("3 replicas on 1 node gave %d owners", got)
	}
}

// The ranking takes its weight function from the caller: a constant weight
// ranks by address (the tie-break every client shares), a weight of the
// seed alone ranks every key the same way.
func TestRankingUsesInjectedWeight(t *testing.T) {
	addrs := []string{"c:1", "a:1", "b:1"}
	flat := newRanking(addrs, func(_, _ uint64) uint64 { return 7 })
	bySeed := newRanking(addrs, func(_, seed uint64) uint64 { return seed })
	want := []string{"a:1", "b:1", "c:1"}
	slices.SortFunc(want, func(x, y string) int { return cmp.Compare(nodeSeed(y), nodeSeed(x)) })
	for _, k := range testKeys(50) {
		if got := flat.owners(k, 3, nil); !slices.Equal(got, []string{"a:1", "b:1", "c:1"}) {
			t.Fatalf("constant weight: owners %v, want address order", got)
		}
		if got := bySeed.owners(k, 3, nil); !slices.Equal(got, want) {
			t.Fatalf("seed weight: owners %v, want %v", got, want)
		}
	}
	if got := flat.owners(testKeys(1)[0], 2, nil); len(got) != 2 {
		t.Fatalf("2 owners of 3 nodes: %v", got)
	}
}
