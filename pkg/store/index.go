package store

import (
	"container/heap"
	"fmt"
)

// entry is the in-memory record of one stored block.
type entry struct {
	id        blockID
	parent    blockID
	hasParent bool
	tenant    *tenant
	size      int64
	access    int64  // last access, unix nanoseconds
	flushed   int64  // access as last written to the file (DB only)
	seq       uint64 // insertion order; breaks ties between equal access times
	// pos is the entry's index in the global leaf heap (slotAll) and in its
	// tenant's (slotTenant), or -1 in both when it is not a leaf candidate.
	pos     [2]int
	pending bool  // written by a commit that has not finished yet
	shard   uint8 // the bbolt file that holds it (DB only)
}

const (
	slotAll = iota
	slotTenant
)

// tenant is the usage of one tenant label (Options.Quotas).
type tenant struct {
	name   string
	quota  int64 // 0 = none
	used   int64
	blocks int64
	leaves leafHeap // the tenant's eviction candidates
}

// index tracks what is stored, how many bytes it takes and which blocks may
// be evicted. It is shared by DB and Memory so both evict in exactly the same
// order. It is not safe for concurrent use; callers hold their own lock.
//
// Leaf-first LRU: leaves is a min-heap, by last access, of the committed
// blocks that have no present child; each tenant has the same heap of its
// own blocks. children counts present children per parent id, whether or
// not the parent itself is present, so a parent put after its child is
// pinned as well. Evicting a leaf may make its parent a leaf, and the parent
// then competes by its own last access.
//
// The parent links never form a cycle (place rejects a block that would
// close one and Open breaks any found in the files), so every block but
// those of chains being written is reachable from some leaf: the store
// cannot lock itself full.
type index struct {
	entries  map[blockID]*entry
	children map[blockID]int32
	leaves   leafHeap
	tenants  map[string]*tenant
	quotas   map[string]int64
	used     int64
	seq      uint64
	// shardUsed is used by shard (DB's files; Memory has one).
	shardUsed [commitShards]int64
}

func newIndex(quotas map[string]int64) *index {
	return &index{entries: make(map[blockID]*entry), children: make(map[blockID]int32),
		leaves: leafHeap{slot: slotAll}, tenants: make(map[string]*tenant), quotas: quotas}
}

// tenantOf returns the usage record of name, creating it on first use.
func (x *index) tenantOf(name string) *tenant {
	t := x.tenants[name]
	if t == nil {
		t = &tenant{name: name, quota: x.quotas[name], leaves: leafHeap{slot: slotTenant}}
		x.tenants[name] = t
	}
	return t
}

func (x *index) pushLeaf(e *entry) {
	heap.Push(&x.leaves, e)
	heap.Push(&e.tenant.leaves, e)
}

func (x *index) dropLeaf(e *entry) {
	if e.pos[slotAll] >= 0 {
		heap.Remove(&x.leaves, e.pos[slotAll])
		heap.Remove(&e.tenant.leaves, e.pos[slotTenant])
	}
}

// add inserts e, which must not be present and must have its tenant set. A
// pending entry is not an eviction candidate until settle.
func (x *index) add(e *entry) {
	if e.seq == 0 { // re-adding an evicted entry keeps its place among ties
		x.seq++
		e.seq = x.seq
	}
	e.pos = [2]int{-1, -1}
	x.entries[e.id] = e
	x.used += e.size
	x.shardUsed[e.shard] += e.size
	e.tenant.used += e.size
	e.tenant.blocks++
	if e.hasParent {
		x.children[e.parent]++
		if p := x.entries[e.parent]; p != nil {
			x.dropLeaf(p)
		}
	}
	if !e.pending && x.children[e.id] == 0 {
		x.pushLeaf(e)
	}
}

// settle marks a pending entry committed, making it evictable.
func (x *index) settle(e *entry) {
	e.pending = false
	if e.pos[slotAll] < 0 && x.children[e.id] == 0 && x.entries[e.id] == e {
		x.pushLeaf(e)
	}
}

// remove deletes id and returns its entry, or nil when absent.
func (x *index) remove(id blockID) *entry {
	e := x.entries[id]
	if e == nil {
		return nil
	}
	delete(x.entries, id)
	x.used -= e.size
	x.shardUsed[e.shard] -= e.size
	e.tenant.used -= e.size
	e.tenant.blocks--
	x.dropLeaf(e)
	if e.hasParent {
		if n := x.children[e.parent] - 1; n > 0 {
			x.children[e.parent] = n
		} else {
			delete(x.children, e.parent)
			if p := x.entries[e.parent]; p != nil && !p.pending && p.pos[slotAll] < 0 {
				x.pushLeaf(p)
			}
		}
	}
	return e
}

// touch records an access at now (unix nanoseconds).
func (x *index) touch(id blockID, now int64) {
	if e := x.entries[id]; e != nil && now > e.access {
		e.access = now
		if e.pos[slotAll] >= 0 {
			heap.Fix(&x.leaves, e.pos[slotAll])
			heap.Fix(&e.tenant.leaves, e.pos[slotTenant])
		}
	}
}

// closesCycle reports whether adding e would close a cycle of parent
// links: only possible when e already has a child (it is put after a
// descendant) and its ancestors lead back to it.
func (x *index) closesCycle(e *entry) bool {
	if !e.hasParent || x.children[e.id] == 0 {
		return false
	}
	for id := e.parent; ; {
		if id == e.id {
			return true
		}
		p := x.entries[id]
		if p == nil || !p.hasParent {
			return false
		}
		id = p.parent
	}
}

// fits reports whether a block of size bytes of tenant fits without
// evicting anything.
func (x *index) fits(size int64, tenant string, capacity int64) bool {
	if capacity > 0 && x.used+size > capacity {
		return false
	}
	t := x.tenants[tenant]
	q := x.quotas[tenant]
	return q == 0 || t == nil && size <= q || t != nil && t.used+size <= q
}

// place adds e, pending, and evicts to make room for it: first the least
// recently used leaves of e's own tenant while the tenant is over its
// quota, then anyone's least recently used leaves while the store is over
// capacity (0 = unlimited). e goes in before any eviction, so its parent is
// no longer a leaf and no block of the chain e extends can be a victim; a
// block whose parent is absent evicts nothing. It
// returns the victims; on failure (ErrInvalidParent, ErrQuota, ErrFull)
// nothing changes.
func (x *index) place(e *entry, capacity int64) ([]*entry, error) {
	if x.closesCycle(e) {
		return nil, fmt.Errorf("%w: the block is an ancestor of its own parent", ErrInvalidParent)
	}
	// A block whose parent is absent is unreachable by a prefix lookup
	// until the parent comes; it may use free room but never evicts a
	// block for it (which, in a chain longer than the capacity, would be
	// the chain's own tail once one block of it was refused).
	orphan := e.hasParent && x.entries[e.parent] == nil
	x.add(e)
	var victims []*entry
	undo := func(err error) ([]*entry, error) {
		x.remove(e.id)
		for i := len(victims) - 1; i >= 0; i-- {
			x.add(victims[i])
		}
		return nil, err
	}
	t := e.tenant
	for t.quota > 0 && t.used > t.quota {
		if orphan {
			return undo(fmt.Errorf("%w: tenant %q is at its quota and the block's parent is absent", ErrQuota, t.name))
		}
		if len(t.leaves.es) == 0 {
			return undo(fmt.Errorf("%w: tenant %q would use %d of its %d bytes and has nothing else evictable", ErrQuota, t.name, t.used, t.quota))
		}
		victims = append(victims, x.remove(t.leaves.es[0].id))
	}
	for capacity > 0 && x.used > capacity {
		if orphan {
			return undo(fmt.Errorf("%w: the block's parent is absent, so it evicts nothing", ErrFull))
		}
		if len(x.leaves.es) == 0 {
			return undo(fmt.Errorf("%w: %d of %d bytes are the chain this block extends or blocks being written", ErrFull, x.used-e.size, capacity))
		}
		victims = append(victims, x.remove(x.leaves.es[0].id))
	}
	return victims, nil
}

// breakCycles clears the parent link of every block on a cycle of parent
// links (written by a version that did not reject them), which would
// otherwise never be a leaf and never be evicted, and returns how many it
// cleared. Peeling leaves off, as eviction would, reaches every block not
// on a cycle.
func (x *index) breakCycles() int {
	left := make(map[blockID]int32, len(x.children))
	var queue []*entry
	for id, e := range x.entries {
		if n := x.children[id]; n > 0 {
			left[id] = n
		} else {
			queue = append(queue, e)
		}
	}
	for len(queue) > 0 {
		e := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if p := x.entries[e.parent]; e.hasParent && p != nil {
			if left[p.id]--; left[p.id] == 0 {
				delete(left, p.id)
				queue = append(queue, p)
			}
		}
	}
	if len(left) == 0 {
		return 0
	}
	all := make([]*entry, 0, len(x.entries))
	for _, e := range x.entries {
		if _, ok := left[e.id]; ok {
			e.hasParent = false
		}
		all = append(all, e)
	}
	*x = *newIndex(x.quotas)
	for _, e := range all {
		e.tenant = x.tenantOf(e.tenant.name)
		x.add(e)
	}
	return len(left)
}

// usage returns a copy of the per-tenant usage.
func (x *index) usage() map[string]TenantStats {
	out := make(map[string]TenantStats, len(x.tenants))
	for name, t := range x.tenants {
		if t.blocks > 0 || t.quota > 0 {
			out[name] = TenantStats{BytesUsed: t.used, Blocks: t.blocks, Quota: t.quota}
		}
	}
	return out
}

// leafHeap orders eviction candidates, oldest access first. slot says
// which of an entry's positions it maintains.
type leafHeap struct {
	es   []*entry
	slot int
}

func (h leafHeap) Len() int           { return len(h.es) }
func (h leafHeap) Less(i, j int) bool { return h.less(h.es[i], h.es[j]) }

// less orders two entries as the heap does.
func (leafHeap) less(a, b *entry) bool {
	if a.access != b.access {
		return a.access < b.access
	}
	return a.seq < b.seq
}
func (h leafHeap) Swap(i, j int) {
	h.es[i], h.es[j] = h.es[j], h.es[i]
	h.es[i].pos[h.slot], h.es[j].pos[h.slot] = i, j
}
func (h *leafHeap) Push(v any) {
	e := v.(*entry)
	e.pos[h.slot] = len(h.es)
	h.es = append(h.es, e)
}
func (h *leafHeap) Pop() any {
	old := h.es
	e := old[len(old)-1]
	old[len(old)-1] = nil
	h.es = old[:len(old)-1]
	e.pos[h.slot] = -1
	return e
}
