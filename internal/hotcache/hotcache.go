// Package hotcache is a bytes-bounded least-recently-used map, safe for
// concurrent use, with O(1) Get, Put and Delete. The worker keeps its
// in-process tier of hot KV blocks in one (pkg/worker, hot.go); the
// package itself knows nothing of blocks, gRPC or models.
//
// Every entry is charged its payload size, given by the caller, plus a
// fixed Overhead for the entry's bookkeeping (list links, key, map slot),
// so the budget bounds the memory the cache keeps alive, not only the
// payloads. Putting an entry evicts least recently used ones until the
// total fits; an entry larger than the whole budget is refused. With a
// TTL, an entry is dropped once it is older than TTL since it was put
// (reading it does not extend its life), so whatever the cache serves was
// put at most TTL ago.
package hotcache

import (
	"sync"
	"time"
	"unsafe"
)

// Options configure a Cache. The zero value (or nil) means no TTL and
// the wall clock.
type Options struct {
	// TTL, when > 0, bounds an entry's age: Get treats an entry put more
	// than TTL ago as absent and drops it. 0 keeps entries until they are
	// evicted or deleted.
	TTL time.Duration
	// Now is the clock (default time.Now); tests inject one.
	Now func() time.Time
}

// Stats are a Cache's counters since New.
type Stats struct {
	Entries   int
	Bytes     int64  // charged bytes resident: payloads plus Overhead each
	Budget    int64  // the bound on Bytes
	Hits      uint64 // Gets that found a live entry
	Misses    uint64 // Gets that did not (expired ones included)
	Evictions uint64 // entries dropped to make room
	Expired   uint64 // entries dropped because they outlived the TTL
	Refused   uint64 // Puts of an entry larger than the budget
}

type entry[K comparable, V any] struct {
	prev, next *entry[K, V]
	key        K
	val        V
	size       int64 // charged: payload + overhead
	born       time.Time
}

// Cache is a bytes-bounded LRU map from K to V. The zero value is not
// usable; call New. Values are handed out as they were put: callers that
// share mutable values (slices) must treat them as read-only.
type Cache[K comparable, V any] struct {
	budget   int64
	ttl      time.Duration
	now      func() time.Time
	overhead int64

	mu    sync.Mutex
	items map[K]*entry[K, V]
	root  entry[K, V] // sentinel: root.next is the most recently used
	bytes int64
	st    Stats
}

// mapSlotBytes approximates what one map entry costs beyond the key and
// the pointer it stores: a control byte per slot and the table's load
// factor (Go's swiss tables keep at most 7/8 of slots full).
const mapSlotBytes = 8

// New returns a cache holding at most budget bytes (payloads plus
// Overhead per entry). A budget <= 0 stores nothing.
func New[K comparable, V any](budget int64, opts *Options) *Cache[K, V] {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	c := &Cache[K, V]{
		budget: max(0, budget), ttl: o.TTL, now: o.Now,
		items: map[K]*entry[K, V]{},
	}
	var k K
	var p *entry[K, V]
	c.overhead = int64(unsafe.Sizeof(entry[K, V]{})) + int64(unsafe.Sizeof(k)) + int64(unsafe.Sizeof(p)) + mapSlotBytes
	c.root.prev, c.root.next = &c.root, &c.root
	c.st.Budget = c.budget
	return c
}

// Overhead is the bytes charged per entry on top of its payload.
func (c *Cache[K, V]) Overhead() int64 { return c.overhead }

// Get returns the value of k and marks it most recently used.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if ok && c.ttl > 0 && c.now().Sub(e.born) > c.ttl {
		c.remove(e)
		c.st.Expired++
		ok = false
	}
	if !ok {
		c.st.Misses++
		var zero V
		return zero, false
	}
	c.st.Hits++
	c.unlink(e)
	c.pushFront(e)
	return e.val, true
}

// Contains reports whether k is held and live, without touching its
// recency or the hit counters.
func (c *Cache[K, V]) Contains(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	return ok && (c.ttl <= 0 || c.now().Sub(e.born) <= c.ttl)
}

// Put stores v under k, charged size payload bytes plus Overhead, as the
// most recently used entry, evicting least recently used entries until
// it fits. A value already under k is replaced (and its age restarts). It
// returns false, storing nothing and leaving any old value in place, when
// the entry alone exceeds the budget.
func (c *Cache[K, V]) Put(k K, v V, size int64) bool {
	charged := max(0, size) + c.overhead
	c.mu.Lock()
	defer c.mu.Unlock()
	if charged > c.budget {
		c.st.Refused++
		return false
	}
	if old, ok := c.items[k]; ok {
		c.remove(old)
	}
	for c.bytes+charged > c.budget {
		c.remove(c.root.prev)
		c.st.Evictions++
	}
	e := &entry[K, V]{key: k, val: v, size: charged, born: c.now()}
	c.items[k] = e
	c.bytes += charged
	c.pushFront(e)
	return true
}

// Delete drops k and reports whether it was held.
func (c *Cache[K, V]) Delete(k K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if ok {
		c.remove(e)
	}
	return ok
}

// DeleteFunc drops every entry whose key satisfies drop and returns how
// many it dropped. It holds the lock for one pass over the entries.
func (c *Cache[K, V]) DeleteFunc(drop func(K) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, e := range c.items {
		if drop(k) {
			c.remove(e)
			n++
		}
	}
	return n
}

// Stats returns the counters and the current size.
func (c *Cache[K, V]) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.st
	s.Entries, s.Bytes = len(c.items), c.bytes
	return s
}

// remove unlinks e and forgets it. c.mu is held.
func (c *Cache[K, V]) remove(e *entry[K, V]) {
	c.unlink(e)
	delete(c.items, e.key)
	c.bytes -= e.size
}

func (c *Cache[K, V]) unlink(e *entry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache[K, V]) pushFront(e *entry[K, V]) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
