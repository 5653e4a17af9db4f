package store

import "container/heap"

// entry is the in-memory record of one stored block.
type entry struct {
	id        blockID
	parent    blockID
	hasParent bool
	size      int64
	access    int64  // last access, unix nanoseconds
	flushed   int64  // access as last written to the file (DB only)
	seq       uint64 // insertion order; breaks ties between equal access times
	pos       int    // index in index.leaves, or -1 when not a leaf candidate
	pending   bool   // written by a commit that has not finished yet
}

// index tracks what is stored, how many bytes it takes and which blocks may
// be evicted. It is shared by DB and Memory so both evict in exactly the same
// order. It is not safe for concurrent use; callers hold their own lock.
//
// Leaf-first LRU: leaves is a min-heap, by last access, of the committed
// blocks that have no present child. children counts present children per
// parent id, whether or not the parent itself is present, so a parent put
// after its child is pinned as well. Evicting a leaf may make its parent a
// leaf, and the parent then competes by its own last access.
type index struct {
	entries  map[blockID]*entry
	children map[blockID]int32
	leaves   leafHeap
	used     int64
	seq      uint64
}

func newIndex() *index {
	return &index{entries: make(map[blockID]*entry), children: make(map[blockID]int32)}
}

// add inserts e, which must not be present. A pending entry is not an
// eviction candidate until settle.
func (x *index) add(e *entry) {
	if e.seq == 0 { // re-adding an evicted entry keeps its place among ties
		x.seq++
		e.seq = x.seq
	}
	e.pos = -1
	x.entries[e.id] = e
	x.used += e.size
	if e.hasParent {
		x.children[e.parent]++
		if p := x.entries[e.parent]; p != nil && p.pos >= 0 {
			heap.Remove(&x.leaves, p.pos)
		}
	}
	if !e.pending && x.children[e.id] == 0 {
		heap.Push(&x.leaves, e)
	}
}

// settle marks a pending entry committed, making it evictable.
func (x *index) settle(e *entry) {
	e.pending = false
	if e.pos < 0 && x.children[e.id] == 0 && x.entries[e.id] == e {
		heap.Push(&x.leaves, e)
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
	if e.pos >= 0 {
		heap.Remove(&x.leaves, e.pos)
	}
	if e.hasParent {
		if n := x.children[e.parent] - 1; n > 0 {
			x.children[e.parent] = n
		} else {
			delete(x.children, e.parent)
			if p := x.entries[e.parent]; p != nil && !p.pending && p.pos < 0 {
				heap.Push(&x.leaves, p)
			}
		}
	}
	return e
}

// touch records an access at now (unix nanoseconds).
func (x *index) touch(id blockID, now int64) {
	if e := x.entries[id]; e != nil && now > e.access {
		e.access = now
		if e.pos >= 0 {
			heap.Fix(&x.leaves, e.pos)
		}
	}
}

// evict removes least recently used leaves until need more bytes fit within
// capacity (0 = unlimited) and returns them. If they cannot fit, it restores
// everything it removed and returns ok == false.
func (x *index) evict(need, capacity int64) (victims []*entry, ok bool) {
	if capacity <= 0 {
		return nil, true
	}
	for x.used+need > capacity {
		if len(x.leaves) == 0 {
			for i := len(victims) - 1; i >= 0; i-- {
				x.add(victims[i])
			}
			return nil, false
		}
		victims = append(victims, x.remove(x.leaves[0].id))
	}
	return victims, true
}

// leafHeap orders eviction candidates, oldest access first.
type leafHeap []*entry

func (h leafHeap) Len() int { return len(h) }
func (h leafHeap) Less(i, j int) bool {
	if h[i].access != h[j].access {
		return h[i].access < h[j].access
	}
	return h[i].seq < h[j].seq
}
func (h leafHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].pos, h[j].pos = i, j
}
func (h *leafHeap) Push(v any) {
	e := v.(*entry)
	e.pos = len(*h)
	*h = append(*h, e)
}
func (h *leafHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.pos = -1
	return e
}
