package client

import (
	"slices"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// placement is the read order of one batch of keys, without a string or a
// slice per key: the owners of key i are nodes[ids[off[i]]],
// nodes[ids[off[i]+1]], ... up to off[i+1]. With the default picker nodes
// is the live view's (immutable) address list; with a custom one it is
// the distinct addresses the picker named. A placement is scratch of one
// read: it is reused by the next one, so nothing it holds may outlive the
// read (the node names themselves are immutable strings and may).
type placement struct {
	nodes []string
	ids   []int32
	off   []int32 // len(keys)+1

	rank   []ranked         // the default picker's ranking buffer
	strs   []string         // a custom picker's answer
	intern map[string]int32 // a custom picker's address -> index in nodes
}

// owners returns key i's owners, as indices into nodes.
func (pl *placement) owners(i int) []int32 { return pl.ids[pl.off[i]:pl.off[i+1]] }

// count is how many owners key i has.
func (pl *placement) count(i int) int { return int(pl.off[i+1] - pl.off[i]) }

// keys is how many keys the placement is for.
func (pl *placement) keys() int { return len(pl.off) - 1 }

func (pl *placement) reset() {
	pl.nodes = nil
	pl.ids = pl.ids[:0]
	pl.off = append(pl.off[:0], 0)
	clear(pl.strs)
	pl.strs = pl.strs[:0]
	clear(pl.intern)
}

// add appends the next key's owners, named by address.
func (pl *placement) add(addrs []string) {
	if pl.intern == nil {
		pl.intern = map[string]int32{}
	}
	for _, a := range addrs {
		id, ok := pl.intern[a]
		if !ok {
			id = int32(len(pl.nodes))
			pl.intern[a] = id
			pl.nodes = append(pl.nodes, a)
		}
		pl.ids = append(pl.ids, id)
	}
	pl.off = append(pl.off, int32(len(pl.ids)))
}

// readOwners fills pl with, for each key, the nodes reads ask in order;
// with the default picker that applies slow start and demotes suspect
// nodes, all keys from one snapshot of the view.
func (c *Client) readOwners(keys []prefix.Key, pl *placement) {
	pl.reset()
	if lp, ok := c.picker.(livePicker); ok {
		v := lp.m.view.Load()
		pl.nodes = v.addrs
		for _, k := range keys {
			pl.ids, pl.rank = v.readOrder(k, pl.ids, pl.rank)
			pl.off = append(pl.off, int32(len(pl.ids)))
		}
		return
	}
	// A custom picker: a node list of its own (a copy, as the picker may
	// reuse nothing of ours but may hand out its own storage).
	pl.nodes = nil
	rp, isRead := c.picker.(ReadPicker)
	for _, k := range keys {
		if isRead {
			pl.strs = rp.ReadOwners(k, pl.strs[:0])
		} else {
			pl.strs = c.picker.Owners(k, pl.strs[:0])
		}
		pl.add(pl.strs)
	}
}

// readOrder appends to dst the read order of key (livePicker.ReadOwners)
// as indices into v.addrs; rbuf is scratch for the ranking, returned
// grown.
func (v *view) readOrder(key prefix.Key, dst []int32, rbuf []ranked) ([]int32, []ranked) {
	cs := v.rank(key, rbuf[:0])
	var now time.Time // read only when a node is warming: a Lookup asks for every key
	k := keyWord(key)
	base := len(dst)
	for _, c := range cs {
		if len(dst)-base == v.replicas {
			break
		}
		st := v.state[c.i]
		if st.suspect {
			continue
		}
		if !st.warmFrom.IsZero() {
			if now.IsZero() {
				now = time.Now()
			}
			if !ramped(k, v.seeds[c.i], warmth(st.warmFrom, v.warmUp, now)) {
				continue
			}
		}
		dst = append(dst, int32(c.i))
	}
	ready := len(dst)
	for i := 0; i < len(cs) && i < v.replicas; i++ {
		if id := int32(cs[i].i); !slices.Contains(dst[base:ready], id) {
			dst = append(dst, id)
		}
	}
	return dst, cs
}
