package client

import (
	"slices"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// ownersOf is a placement's owners of key i, by address.
func ownersOf(pl *placement, i int) []string {
	var out []string
	for _, id := range pl.owners(i) {
		out = append(out, pl.nodes[id])
	}
	return out
}

// readOwners' placement, reused from batch to batch, names the same read
// order as the picker's ReadOwners (or Owners), for the default picker
// with warming and suspect nodes and for custom pickers.
func TestPlacementMatchesReadOwners(t *testing.T) {
	nodes := []string{"a:1", "b:1", "c:1", "d:1", "e:1"}
	warm := map[string]time.Time{"d:1": time.Now().Add(-50 * time.Second)}
	for _, tc := range []struct {
		name   string
		picker Picker
		want   func(prefix.Key) []string
	}{
		{"live", pickerWith(warm, 100*time.Second, "b:1", nodes...), nil},
		{"rendezvous", NewRendezvous(nodes, 3), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{picker: tc.picker}
			want := func(k prefix.Key) []string {
				if rp, ok := tc.picker.(ReadPicker); ok {
					return rp.ReadOwners(k, nil)
				}
				return tc.picker.Owners(k, nil)
			}
			var pl placement
			keys := testKeys(3000)
			// Batches of different sizes into the same placement: nothing
			// of a batch may show in the next.
			for _, n := range []int{3000, 7, 512, 1} {
				batch := keys[len(keys)-n:]
				c.readOwners(batch, &pl)
				if pl.keys() != n {
					t.Fatalf("placement of %d keys for %d", pl.keys(), n)
				}
				for i, k := range batch {
					if got, w := ownersOf(&pl, i), want(k); !slices.Equal(got, w) {
						t.Fatalf("batch of %d, key %d: placement %v, picker %v", n, i, got, w)
					}
				}
			}
		})
	}
}
