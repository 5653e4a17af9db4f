package store

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Memory is an in-memory Store with the same semantics as DB except
// durability: same validation, verification, idempotency, capacity and
// eviction order. It is the fake for tests of the layers above the store.
type Memory struct {
	cfg config

	mu     sync.Mutex
	idx    *index
	blocks map[blockID][]byte // owned copies, never modified
	closed bool

	hits, misses, evictions, puts, putBytes atomic.Int64
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store. A nil opts means defaults; the
// DB-only fields are ignored.
func NewMemory(opts *Options) *Memory {
	cfg := newConfig(opts)
	return &Memory{cfg: cfg, idx: newIndex(cfg.quotas), blocks: make(map[blockID][]byte)}
}

// Put implements Store.
func (m *Memory) Put(ctx context.Context, ns prefix.Namespace, key prefix.Key, block []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	parent, hasParent, err := m.cfg.checkPut(ns, key, block)
	if err != nil {
		return false, err
	}
	tenant, err := tenantFor(ctx)
	if err != nil {
		return false, err
	}
	id := makeID(ns, key)
	own := append([]byte(nil), block...)
	now := m.cfg.now().UnixNano()

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if m.idx.entries[id] != nil {
		m.idx.touch(id, now)
		return false, nil
	}
	e := &entry{id: id, parent: parent, hasParent: hasParent, tenant: m.idx.tenantOf(tenant),
		size: int64(len(own)), access: now, pending: true}
	victims, err := m.idx.place(e, m.cfg.capacity)
	if err != nil {
		return false, err
	}
	m.idx.settle(e)
	for _, v := range victims {
		delete(m.blocks, v.id)
	}
	m.evictions.Add(int64(len(victims)))
	m.blocks[id] = own
	m.puts.Add(1)
	m.putBytes.Add(int64(len(own)))
	return true, nil
}

// Get implements Store.
func (m *Memory) Get(ctx context.Context, ns prefix.Namespace, key prefix.Key, dst []byte) ([]byte, error) {
	var out []byte
	err := m.View(ctx, ns, []prefix.Key{key}, func(_ int, b []byte, found bool) error {
		if !found {
			return ErrNotFound
		}
		out = append(dst[:0], b...)
		return nil
	})
	return out, err
}

// View implements Store. The blocks are immutable copies, so fn runs
// without the lock held.
func (m *Memory) View(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, fn func(i int, block []byte, found bool) error) error {
	blocks, err := m.snapshot(ctx, ns, keys, true)
	if err != nil {
		return err
	}
	for i, b := range blocks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b != nil {
			m.hits.Add(1)
		} else {
			m.misses.Add(1)
		}
		if err := fn(i, b, b != nil); err != nil {
			return err
		}
	}
	return nil
}

// Lookup implements Store.
func (m *Memory) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	blocks, err := m.snapshot(ctx, ns, keys, false)
	for n, b := range blocks {
		if b == nil {
			return n, nil
		}
	}
	return len(blocks), err
}

// Contains implements Store.
func (m *Memory) Contains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) ([]bool, error) {
	blocks, err := m.snapshot(ctx, ns, keys, false)
	if err != nil {
		return nil, err
	}
	found := make([]bool, len(blocks))
	for i, b := range blocks {
		found[i] = b != nil
	}
	return found, nil
}

// snapshot returns the blocks of keys (nil when absent), taken under one
// lock so they are consistent; with access it records an access for the
// present ones.
func (m *Memory) snapshot(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, access bool) ([][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkKeys(ns, keys); err != nil {
		return nil, err
	}
	now := m.cfg.now().UnixNano()
	out := make([][]byte, len(keys))
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	for i, k := range keys {
		id := makeID(ns, k)
		if b, ok := m.blocks[id]; ok {
			out[i] = b
			if access {
				m.idx.touch(id, now)
			}
		}
	}
	return out, nil
}

// Delete implements Store.
func (m *Memory) Delete(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if err := checkKeys(ns, keys); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	n := 0
	for _, k := range keys {
		id := makeID(ns, k)
		if m.idx.remove(id) != nil {
			delete(m.blocks, id)
			n++
		}
	}
	return n, nil
}

// Stats implements Store.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	used, blocks, tenants := m.idx.used, int64(len(m.idx.entries)), m.idx.usage()
	m.mu.Unlock()
	return Stats{
		BytesUsed: used,
		Capacity:  m.cfg.capacity,
		Blocks:    blocks,
		Hits:      m.hits.Load(),
		Misses:    m.misses.Load(),
		Evictions: m.evictions.Load(),
		Puts:      m.puts.Load(),
		PutBytes:  m.putBytes.Load(),
		Tenants:   tenants,
	}
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.blocks = nil
	return nil
}
