package client

import (
	"crypto/sha256"
	"fmt"
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
