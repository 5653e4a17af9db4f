package client

import (
	"sync/atomic"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Picker chooses the nodes that own a key, most preferred first. The client
// asks owners in that order and writes to all of them. Implementations must
// be safe for concurrent use. A Picker may also implement NodeSetter and
// ReadPicker.
type Picker interface {
	Owners(key prefix.Key, dst []string) []string
}

// NodeSetter is a Picker that wants the live members: the client calls
// SetNodes on every membership change (Config.Picker).
type NodeSetter interface {
	SetNodes(nodes []string)
}

// ReadPicker is a Picker with a read order that may differ from the write
// owners (the default picker reads warming and suspect nodes last). Reads
// use ReadOwners when the Picker has it, Owners otherwise.
type ReadPicker interface {
	Picker
	ReadOwners(key prefix.Key, dst []string) []string
}

// Rendezvous is highest-random-weight placement: every node gets a
// pseudo-random weight for each key and the R heaviest own it. Adding or
// removing a node moves only the keys it wins or owned, and every client
// computes the same owners with no coordination.
type Rendezvous struct {
	replicas int
	r        atomic.Pointer[ranking]
}

// NewRendezvous places keys on replicas of nodes (fewer when there are fewer
// nodes). replicas < 1 means 1.
func NewRendezvous(nodes []string, replicas int) *Rendezvous {
	r := &Rendezvous{replicas: max(replicas, 1)}
	r.SetNodes(nodes)
	return r
}

// SetNodes replaces the set of candidate nodes, e.g. after a health change.
// It implements NodeSetter.
func (r *Rendezvous) SetNodes(nodes []string) {
	rk := newRanking(nodes, nil)
	r.r.Store(&rk)
}

// Nodes returns the candidate nodes, sorted.
func (r *Rendezvous) Nodes() []string {
	return append([]string(nil), r.r.Load().addrs...)
}

// Owners implements Picker.
func (r *Rendezvous) Owners(key prefix.Key, dst []string) []string {
	return r.r.Load().owners(key, r.replicas, dst)
}
