package client

import (
	"slices"
	"testing"
	"time"
)

// pickerWith builds a picker over nodes with the given warm-up starts.
func pickerWith(warm map[string]time.Time, warmUp time.Duration, suspect string, nodes ...string) livePicker {
	m := &membership{}
	state := map[string]vstate{}
	for _, a := range nodes {
		state[a] = vstate{warmFrom: warm[a], suspect: a == suspect}
	}
	m.view.Store(newView(nodes, state, 2, warmUp))
	return livePicker{m}
}

func TestLivePickerAgreesWithRendezvous(t *testing.T) {
	nodes := []string{"a:1", "b:1", "c:1", "d:1"}
	r := NewRendezvous(nodes, 2)
	p := pickerWith(nil, 0, "", nodes...)
	for _, k := range testKeys(2000) {
		if a, b := r.Owners(k, nil), p.Owners(k, nil); !slices.Equal(a, b) {
			t.Fatalf("rendezvous %v, live picker %v", a, b)
		}
		if a, b := p.Owners(k, nil), p.ReadOwners(k, nil); !slices.Equal(a, b) {
			t.Fatalf("healthy cluster: owners %v, read order %v", a, b)
		}
	}
}

// A warming node gets every write it owns but a linearly ramping share of
// first reads; until a key ramps, its reads go to the stable owners.
func TestSlowStartRampsReadsLinearly(t *testing.T) {
	nodes := []string{"a:1", "b:1", "c:1", "new:1"}
	const warmUp = 100 * time.Second
	keys := testKeys(20000)
	for _, frac := range []float64{0, 0.25, 0.5, 0.75, 1} {
		start := time.Now().Add(-time.Duration(frac * float64(warmUp)))
		p := pickerWith(map[string]time.Time{"new:1": start}, warmUp, "", nodes...)
		stable := NewRendezvous(nodes[:3], 2)
		owned, first := 0, 0
		for _, k := range keys {
			w, r := p.Owners(k, nil), p.ReadOwners(k, nil)
			if !slices.Contains(w, "new:1") {
				continue
			}
			owned++
			if slices.Index(r[:2], "new:1") >= 0 {
				first++
				continue
			}
			// Not ramped: reads go to where the key lived before the join,
			// and the new owner is the last fallback.
			if !slices.Equal(r[:2], stable.Owners(k, nil)) || r[len(r)-1] != "new:1" {
				t.Fatalf("warming read order %v, stable owners %v", r, stable.Owners(k, nil))
			}
		}
		got := float64(first) / float64(owned)
		if d := got - frac; d > 0.03 || d < -0.03 {
			t.Errorf("at %.0f%% of warm-up the new node reads first for %.3f of its keys", 100*frac, got)
		}
	}
}

func TestSuspectNodeIsReadLast(t *testing.T) {
	p := pickerWith(nil, 0, "b:1", "a:1", "b:1", "c:1")
	for _, k := range testKeys(500) {
		w, r := p.Owners(k, nil), p.ReadOwners(k, nil)
		if slices.Contains(w, "b:1") && (len(r) != 3 || r[2] != "b:1") {
			t.Fatalf("owners %v, read order %v: suspect b should be last", w, r)
		}
	}
}
