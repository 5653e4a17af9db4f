package store

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Group commit. One writer goroutine owns all writes. It takes the first
// waiting operation, drains every other one already waiting (Put callers
// block on an unbuffered channel while a commit runs), writes them all in
// one bbolt transaction and fsyncs once. There is no timer: a commit starts
// as soon as the previous one ends, so a lone Put pays one fsync and 16
// concurrent writers share one.
//
// The writer is also the only goroutine that adds or removes index entries,
// so it can plan a commit (evictions included) against the index and
// apply it without races with other writers.

// A Put becomes part of a commit only if the writer moves it from queued to
// taken before its caller, whose context ended, moves it to abandoned.
const (
	queued int32 = iota
	taken
	abandoned
)

// op is one Put (block != nil) or one Delete (ids != nil).
type op struct {
	// Put
	id        blockID
	parent    blockID
	hasParent bool
	tenant    string
	block     []byte
	state     atomic.Int32
	entry     *entry // set by the writer once planned
	deferred  int64  // when the writer first put it off to wait for its parent (unix ns)

	// Delete
	ids []blockID

	// results, valid once done is closed
	stored bool
	n      int
	err    error
	done   chan struct{}
}

// Put implements Store.
func (db *DB) Put(ctx context.Context, ns prefix.Namespace, key prefix.Key, block []byte) (bool, error) {
	if db.closed.Load() {
		return false, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	parent, hasParent, err := db.cfg.checkPut(ns, key, block)
	if err != nil {
		return false, err
	}
	tenant, err := tenantFor(ctx)
	if err != nil {
		return false, err
	}
	id := makeID(ns, key)
	if block == nil {
		block = []byte{} // a nil block would mean a Delete to the writer
	}
	o := &op{id: id, parent: parent, hasParent: hasParent, tenant: tenant, block: block, done: make(chan struct{})}

	// Collapse concurrent Puts of one key: the later ones wait for the first
	// and report stored == false if it succeeded; they retry if it failed.
	for {
		db.mu.Lock()
		if prev := db.inflight[id]; prev != nil {
			db.mu.Unlock()
			select {
			case <-prev.done:
			case <-ctx.Done():
				return false, ctx.Err()
			}
			if prev.err == nil {
				return false, nil
			}
			continue
		}
		if e := db.idx.entries[id]; e != nil {
			db.idx.touch(id, db.cfg.now().UnixNano())
			db.mu.Unlock()
			return false, nil
		}
		db.inflight[id] = o
		db.mu.Unlock()
		break
	}

	select {
	case db.ops <- o:
	case <-ctx.Done():
		db.finishAbandoned(o, ctx.Err())
		return false, ctx.Err()
	case <-db.closing:
		db.finishAbandoned(o, ErrClosed)
		return false, ErrClosed
	}
	select {
	case <-o.done:
	case <-ctx.Done():
		if o.state.CompareAndSwap(queued, abandoned) {
			db.finishAbandoned(o, ctx.Err())
			return false, ctx.Err()
		}
		<-o.done // already in a commit: bounded by one fsync; report its outcome
	}
	return o.stored, o.err
}

// finishAbandoned acknowledges a Put that never joined a commit.
func (db *DB) finishAbandoned(o *op, err error) {
	o.state.Store(abandoned)
	o.err = err
	db.mu.Lock()
	delete(db.inflight, o.id)
	db.mu.Unlock()
	close(o.done)
}

// Delete implements Store.
func (db *DB) Delete(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	if err := checkKeys(ns, keys); err != nil {
		return 0, err
	}
	if db.closed.Load() {
		return 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	o := &op{ids: make([]blockID, len(keys)), done: make(chan struct{})}
	for i, k := range keys {
		o.ids[i] = makeID(ns, k)
	}
	select {
	case db.ops <- o:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-db.closing:
		return 0, ErrClosed
	}
	<-o.done // a Delete taken by the writer always completes
	return o.n, o.err
}

// run is the writer goroutine.
func (db *DB) run() {
	defer close(db.writerDone)
	var tick <-chan time.Time
	if db.cfg.flushEvery > 0 {
		t := time.NewTicker(db.cfg.flushEvery)
		defer t.Stop()
		tick = t.C
	}
	var batch, deferred []*op
	for {
		if len(deferred) > 0 {
			// Children whose parent was still on its way: the parent's
			// Put is blocked sending to ops, so it comes at once.
			batch = append(batch[:0], deferred...)
			deferred = deferred[:0]
			wait := time.NewTimer(deferWait)
			select {
			case o := <-db.ops:
				batch = append(batch, o)
			case <-wait.C:
			case <-db.closing:
				wait.Stop()
				db.failQueued(batch, ErrClosed)
				db.flushAccess()
				return
			}
			wait.Stop()
		} else {
			select {
			case o := <-db.ops:
				batch = append(batch[:0], o)
			case <-tick:
				db.flushAccess()
				continue
			case <-db.closing:
				db.flushAccess()
				return
			}
		}
		bytes := 0
		for _, o := range batch {
			bytes += len(o.block)
		}
	drain:
		for len(batch) < db.cfg.maxBatchOps && bytes < db.cfg.maxBatchBytes {
			select {
			case o := <-db.ops:
				batch = append(batch, o)
				bytes += len(o.block)
			default:
				break drain
			}
		}
		db.commits.Add(1)
		db.batchedOps.Add(int64(len(batch)))
		batch = parentsFirst(batch)
		deferred = db.commit(batch, deferred)
		clear(batch)
	}
}

// deferWait is how long the writer waits for the parent of a deferred
// child before committing the child anyway (as an orphan).
const deferWait = 2 * time.Millisecond

// failQueued acknowledges the Puts of ops still queued with err.
func (db *DB) failQueued(ops []*op, err error) {
	for _, o := range ops {
		if o.ids == nil && o.state.CompareAndSwap(queued, taken) {
			o.err = err
			db.mu.Lock()
			delete(db.inflight, o.id)
			db.mu.Unlock()
			close(o.done)
		}
	}
}

// parentsFirst orders a batch so that a Put whose parent is also put in
// the batch comes after it. Concurrent Puts of one chain (a Put stream
// commits several blocks at once) reach the writer in any order, and a
// child planned before its parent would count as an orphan, which evicts
// nothing (index.place).
func parentsFirst(batch []*op) []*op {
	pos := make(map[blockID]int, len(batch))
	for i, o := range batch {
		if o.ids == nil {
			pos[o.id] = i
		}
	}
	parentAt := func(o *op) (int, bool) {
		if o.ids != nil || !o.hasParent {
			return 0, false
		}
		i, ok := pos[o.parent]
		return i, ok
	}
	inOrder := true
	for i, o := range batch {
		if p, ok := parentAt(o); ok && p > i {
			inOrder = false
			break
		}
	}
	if inOrder {
		return batch
	}
	out := make([]*op, 0, len(batch))
	done := make([]bool, len(batch))
	var emit func(i int)
	emit = func(i int) {
		if done[i] {
			return
		}
		done[i] = true
		if p, ok := parentAt(batch[i]); ok {
			emit(p)
		}
		out = append(out, batch[i])
	}
	for i := range batch {
		emit(i)
	}
	return out
}

// action is one write of a commit, applied in order.
type action struct {
	id    blockID
	block []byte // nil: delete
	meta  []byte
}

// deferOrphan reports whether the writer should put o off to a later
// commit: its parent is absent, so it would be an orphan, which evicts
// nothing, and the store has no free room for it. Concurrent Puts of one
// chain (a Put stream commits several blocks at once) can reach the writer
// child first, even in different commits; waiting up to orphanWait for
// the parent lets the child be planned as part of its chain. True orphans
// pay that wait only when the store is full.
func (db *DB) deferOrphan(o *op) bool {
	if !o.hasParent || db.idx.entries[o.parent] != nil || db.idx.fits(int64(len(o.block)), o.tenant, db.cfg.capacity) {
		return false
	}
	now := time.Now().UnixNano() // not cfg.now: tests stop that clock
	if o.deferred == 0 {
		o.deferred = now
	}
	return now-o.deferred < int64(orphanWait)
}

// orphanWait bounds how long the writer holds a child for its parent.
const orphanWait = 20 * time.Millisecond

// commit plans the batch against the index, writes it in one transaction
// and acknowledges every operation, except Puts held back for their
// parent (deferOrphan): those are appended to deferred and returned.
func (db *DB) commit(batch []*op, deferred []*op) []*op {
	now := db.cfg.now().UnixNano()
	var acts []action
	var evicted int

	db.mu.Lock()
	for _, o := range batch {
		if o.ids != nil {
			for _, id := range o.ids {
				if db.idx.remove(id) != nil {
					acts = append(acts, action{id: id})
					o.n++
				}
			}
			continue
		}
		if db.deferOrphan(o) {
			deferred = append(deferred, o)
			continue
		}
		if !o.state.CompareAndSwap(queued, taken) {
			continue // its caller gave up and acknowledged it
		}
		e := &entry{id: o.id, parent: o.parent, hasParent: o.hasParent, tenant: db.idx.tenantOf(o.tenant),
			size: int64(len(o.block)), access: now, flushed: now, pending: true}
		victims, err := db.idx.place(e, db.cfg.capacity)
		if err != nil {
			o.err = err
			continue
		}
		for _, v := range victims {
			acts = append(acts, action{id: v.id})
			db.cfg.log.Debug("evict", "id", fmt.Sprintf("%x", v.id), "bytes", v.size)
		}
		evicted += len(victims)
		o.entry = e
		acts = append(acts, action{id: o.id, block: o.block, meta: encodeMeta(o.entry)})
	}
	db.mu.Unlock()

	var err error
	if len(acts) > 0 {
		err = db.bolt.Update(func(tx *bbolt.Tx) error { return writeActions(tx, acts) })
	}

	db.mu.Lock()
	if err != nil {
		// Make memory agree with the file again; the failed plan is gone.
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("%w: commit: %w", ErrNoSpace, err)
			db.cfg.log.Warn("commit failed: file system full", "err", err, "ops", len(batch))
		} else {
			err = fmt.Errorf("store: commit: %w", err)
			db.cfg.log.Error("commit failed", "err", err, "ops", len(batch))
		}
		if lerr := db.bolt.View(func(tx *bbolt.Tx) (e error) {
			x, _, e := loadIndex(tx, db.cfg.quotas)
			if e == nil {
				db.idx = x
			}
			return e
		}); lerr != nil {
			db.cfg.log.Error("reload index after failed commit", "err", lerr)
		}
	} else {
		db.evictions.Add(int64(evicted))
	}
	for _, o := range batch {
		if o.ids != nil {
			if err != nil {
				o.n, o.err = 0, err
			}
			close(o.done)
			continue
		}
		if o.state.Load() != taken {
			continue
		}
		if o.err == nil {
			if err != nil {
				o.err = err
			} else {
				o.stored = true
				db.idx.settle(o.entry)
				db.puts.Add(1)
				db.putBytes.Add(int64(len(o.block)))
			}
		}
		delete(db.inflight, o.id)
		close(o.done)
	}
	db.mu.Unlock()
	return deferred
}

func writeActions(tx *bbolt.Tx, acts []action) error {
	blocks, meta := tx.Bucket(bucketBlocks), tx.Bucket(bucketMeta)
	for _, a := range acts {
		if a.block == nil {
			if err := blocks.DeleteBucket(a.id[:]); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
				return err
			}
			if err := meta.Delete(a.id[:]); err != nil {
				return err
			}
			continue
		}
		b, err := blocks.CreateBucket(a.id[:])
		if err != nil {
			return err
		}
		if err := b.Put(keyValue, a.block); err != nil {
			return err
		}
		if err := meta.Put(a.id[:], a.meta); err != nil {
			return err
		}
	}
	return nil
}

// flushAccess writes the access times that changed since the last flush.
// Only the writer calls it, so no entry is added or removed meanwhile.
func (db *DB) flushAccess() {
	type rec struct {
		e      *entry
		access int64
		meta   []byte
	}
	var recs []rec
	db.mu.Lock()
	for _, e := range db.idx.entries {
		if e.access != e.flushed && !e.pending {
			recs = append(recs, rec{e, e.access, encodeMeta(e)})
		}
	}
	db.mu.Unlock()
	if len(recs) == 0 {
		return
	}
	err := db.bolt.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		for _, r := range recs {
			if err := meta.Put(r.e.id[:], r.meta); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.cfg.log.Error("flush access times", "err", err)
		return
	}
	db.mu.Lock()
	for _, r := range recs {
		r.e.flushed = r.access
	}
	db.mu.Unlock()
}
