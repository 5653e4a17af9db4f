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

// Pipelined group commit. One writer goroutine plans all writes. It takes
// the first waiting operation, drains every other one already waiting (Put
// callers block on an unbuffered channel while no shard is free), plans
// them against the index (evictions included) and hands the batch to the
// next shard in turn, once that one is idle; the shard's commit goroutine
// writes the batch in one bbolt transaction and fsyncs, and the Puts of
// the batch are acknowledged only when that transaction, fsync included,
// has returned. Meanwhile the writer plans the next batch for the other
// shard: while batch N fsyncs, batch N+1 is written. There is no timer: a
// commit starts as soon as its shard is free, so a lone Put pays one fsync
// and 16 concurrent writers share two commits in flight.
//
// The writer is also the only goroutine that adds or removes index entries,
// so it plans commits without races with other writers. A batch may evict
// a block held by the other shard, which is busy: that deletion waits in
// later[shard] for that shard's next commit (an eviction lost to a crash
// only brings the block back). Deletes, access-time flushes, Close and the
// recovery from a failed commit wait for both shards to be idle.

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
	moves     int    // times a shard had no room for it within the disk bound (disk.go)

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

// job is one planned commit of the Puts of a batch on one shard.
type job struct {
	shard   int
	puts    []*op    // taken Puts (and failed plans, whose err is set)
	acts    []action // in order: deferred evictions of the shard, then the plan
	evicted int
	moved   bool // its Puts did not fit its file (disk.go): only its deletions were committed
	// evictOther, with moved, are blocks of the next shard evicted to make
	// room for the Puts there: that shard's next commit deletes them.
	evictOther []blockID
	err        error // the commit's, set by commitJob
}

// writer is the state of the writer goroutine.
type writer struct {
	db *DB
	// Batches go to the shards in turn, so each file receives half of the
	// bytes written and, as eviction takes the oldest blocks, frees about
	// half: files grow alike, and the space one frees is reused by it.
	next     int
	inflight []bool // per shard: a commit in flight
	busy     int    // commits in flight
	results  chan *job
	later    [][]blockID // per shard: evicted blocks to delete in its next commit
	// carry holds Puts planned for a shard whose file had no room for
	// them within the disk bound; the next commit, of the other shard,
	// writes them.
	carry []*op
}

// run is the writer goroutine.
func (db *DB) run() {
	defer close(db.writerDone)
	w := &writer{db: db, results: make(chan *job, len(db.shards)), later: make([][]blockID, len(db.shards)),
		inflight: make([]bool, len(db.shards))}
	var tick <-chan time.Time
	if db.cfg.flushEvery > 0 {
		t := time.NewTicker(db.cfg.flushEvery)
		defer t.Stop()
		tick = t.C
	}
	var batch, deferred []*op
	flushDue := false
	for {
		if flushDue && w.busy == 0 {
			db.flushAccess()
			flushDue = false
		}
		var ops <-chan *op
		var wait <-chan time.Time
		var timer *time.Timer
		var carry <-chan struct{}
		if len(w.carry) > 0 && !w.inflight[w.next] {
			carry = ready
		}
		if !w.inflight[w.next] && !flushDue {
			ops = db.ops
			if len(deferred) > 0 {
				// Children whose parent was still on its way: the parent's
				// Put is blocked sending to ops, so it comes at once.
				timer = time.NewTimer(deferWait)
				wait = timer.C
			}
		}
		launch := false // batch holds the deferred Puts: plan a commit
		select {
		case j := <-w.results:
			w.complete(j)
		case o := <-ops:
			batch = append(append(batch[:0], deferred...), o)
			launch = true
		case <-wait:
			batch = append(batch[:0], deferred...)
			launch = true
		case <-carry:
			batch = append(batch[:0], deferred...)
			launch = true
		case <-tick:
			flushDue = true
		case <-db.closing:
			w.quiesce()
			w.failCarry(ErrClosed)
			db.failQueued(deferred, ErrClosed)
			db.flushAccess()
			w.flushLater()
			return
		}
		if timer != nil {
			timer.Stop()
		}
		if !launch || len(batch) == 0 && len(w.carry) == 0 {
			continue
		}
		deferred = deferred[:0]
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
		var puts, dels []*op
		for _, o := range batch {
			if o.ids != nil {
				dels = append(dels, o)
			} else {
				puts = append(puts, o)
			}
		}
		if len(dels) > 0 {
			w.quiesce()
			w.delete(dels)
		}
		if len(puts) > 0 || len(w.carry) > 0 {
			j := &job{shard: w.next}
			deferred = w.plan(j, puts, deferred)
			w.next = db.nextShard(j.shard)
			w.inflight[j.shard] = true
			w.busy++
			go func() { w.results <- db.commitJob(j) }()
		}
		clear(batch)
		batch = batch[:0]
	}
}

// nextShard picks the shard of the next commit: the other one, so one
// commit is written while the previous one fsyncs, unless the files'
// blocks have drifted apart by more than shardDrift of Capacity; then the
// lighter one, even if that means waiting for its commit. Evictions take
// the least recently used leaves of either file, so without this each
// file's usage wanders, and each file keeps its own peak (files never
// shrink): two files at half the capacity each would together grow well
// past it.
func (db *DB) nextShard(last int) int {
	next := (last + 1) % len(db.shards)
	if db.cfg.capacity <= 0 {
		return next
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	light := 0
	for i, u := range db.idx.shardUsed[:len(db.shards)] {
		if u < db.idx.shardUsed[light] {
			light = i
		}
	}
	if db.idx.shardUsed[next]-db.idx.shardUsed[light] > db.cfg.capacity/shardDrift {
		return light
	}
	return next
}

// shardDrift: files may differ in block bytes by Capacity/shardDrift
// before the writer gives up overlapping commits to even them out.
const shardDrift = 64

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

// plan plans the Puts of a batch for shard j.shard against the index,
// under the lock, into j. Puts held back for their parent (deferOrphan)
// are appended to deferred and returned.
func (w *writer) plan(j *job, puts []*op, deferred []*op) []*op {
	db := w.db
	now := db.cfg.now().UnixNano()
	for _, id := range w.later[j.shard] {
		j.acts = append(j.acts, action{id: id})
	}
	w.later[j.shard] = nil
	db.mu.Lock()
	defer db.mu.Unlock()
	for _, o := range w.carry {
		e := o.entry
		if db.idx.entries[o.id] != e { // deleted meanwhile
			o.entry = nil
			j.puts = append(j.puts, o)
			continue
		}
		db.idx.shardUsed[e.shard] -= e.size
		e.shard = uint8(j.shard)
		db.idx.shardUsed[e.shard] += e.size
		j.puts = append(j.puts, o)
		j.acts = append(j.acts, action{id: o.id, block: o.block, meta: encodeMeta(e)})
	}
	w.carry = nil
	for _, o := range puts {
		if db.deferOrphan(o) {
			deferred = append(deferred, o)
			continue
		}
		if !o.state.CompareAndSwap(queued, taken) {
			continue // its caller gave up and acknowledged it
		}
		j.puts = append(j.puts, o)
		e := &entry{id: o.id, parent: o.parent, hasParent: o.hasParent, tenant: db.idx.tenantOf(o.tenant),
			size: int64(len(o.block)), access: now, flushed: now, pending: true, shard: uint8(j.shard)}
		victims, err := db.idx.place(e, db.cfg.capacity)
		if err != nil {
			o.err = err
			continue
		}
		for _, v := range victims {
			if int(v.shard) == j.shard {
				j.acts = append(j.acts, action{id: v.id})
			} else {
				w.later[v.shard] = append(w.later[v.shard], v.id)
			}
			db.cfg.log.Debug("evict", "id", fmt.Sprintf("%x", v.id), "bytes", v.size)
		}
		j.evicted += len(victims)
		o.entry = e
		j.acts = append(j.acts, action{id: o.id, block: o.block, meta: encodeMeta(e)})
	}
	return deferred
}

// commitJob writes j in one transaction of its shard (fsync included,
// unless NoSync) and returns it with its error set. It runs in its own
// goroutine; nothing else writes to the shard meanwhile.
func (db *DB) commitJob(j *job) *job {
	if len(j.acts) > 0 {
		j.err = db.commitActs(j)
	}
	if j.err == nil && db.cfg.committed != nil {
		db.cfg.committed(j.shard)
	}
	j.err = db.commitErr(j.err, len(j.acts))
	return j
}

// commitErr wraps and logs the error of a commit of n actions.
func (db *DB) commitErr(err error, n int) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOSPC):
		err = fmt.Errorf("%w: commit: %w", ErrNoSpace, err)
		db.cfg.log.Warn("commit failed: file system full", "err", err, "actions", n)
	default:
		err = fmt.Errorf("store: commit: %w", err)
		db.cfg.log.Error("commit failed", "err", err, "actions", n)
	}
	return err
}

// complete handles a finished job: it acknowledges its Puts and frees its
// shard. After a failed commit it first waits for the other commits in
// flight and rebuilds the index from the files, so memory agrees with them
// again before anyone is told.
func (w *writer) complete(j *job) {
	w.busy--
	w.inflight[j.shard] = false
	if j.err == nil {
		if j.moved {
			w.carry = append(w.carry, w.db.ackMoved(j)...)
			o := (j.shard + 1) % len(w.later)
			w.later[o] = append(w.later[o], j.evictOther...)
			return
		}
		w.db.ack(j)
		return
	}
	failed := []*job{j}
	for w.busy > 0 {
		k := <-w.results
		w.busy--
		w.inflight[k.shard] = false
		switch {
		case k.err != nil:
			failed = append(failed, k)
		case k.moved:
			// The reload below forgets deferred evictions (and evictOther).
			w.carry = append(w.carry, w.db.ackMoved(k)...)
		default:
			w.db.ack(k)
		}
	}
	w.reload()
	w.failCarry(failed[0].err)
	for _, f := range failed {
		w.db.ack(f)
	}
}

// failCarry fails the Puts waiting in carry (Close, or a reload, which
// dropped their entries).
func (w *writer) failCarry(err error) {
	w.db.mu.Lock()
	for _, o := range w.carry {
		o.err = err
		delete(w.db.inflight, o.id)
		close(o.done)
	}
	w.db.mu.Unlock()
	w.carry = nil
}

// ready is always ready to receive from.
var ready = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// quiesce waits for every commit in flight.
func (w *writer) quiesce() {
	for w.busy > 0 {
		w.complete(<-w.results)
	}
}

// reload rebuilds the index from the files; only with every shard idle.
// Deferred evictions are forgotten (their blocks are in the files, so
// back in the index), and a block found in two shards is kept from the
// first and deleted from the other at its next commit.
func (w *writer) reload() {
	db := w.db
	x := newIndex(db.cfg.quotas)
	later := make([][]blockID, len(db.shards))
	for i, b := range db.shards {
		if err := b.View(func(tx *bbolt.Tx) (err error) {
			later[i], err = loadShard(x, tx, uint8(i))
			return err
		}); err != nil {
			db.cfg.log.Error("reload index after failed commit", "err", err)
			return
		}
	}
	x.breakCycles()
	db.mu.Lock()
	db.idx = x
	db.mu.Unlock()
	w.later = later
}

// ack acknowledges the Puts of a finished job.
func (db *DB) ack(j *job) {
	db.mu.Lock()
	defer db.mu.Unlock()
	if j.err == nil {
		db.evictions.Add(int64(j.evicted))
	}
	for _, o := range j.puts {
		if o.err == nil && o.entry == nil {
			// carried, and deleted before its commit: as if stored and deleted
		} else if o.err == nil {
			if j.err != nil {
				o.err = j.err
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
}

// ackMoved handles a finished job whose Puts did not fit its file: it
// counts its evictions, acknowledges its failed plans and returns the
// Puts to carry to the next commit.
func (db *DB) ackMoved(j *job) []*op {
	db.mu.Lock()
	defer db.mu.Unlock()
	db.evictions.Add(int64(j.evicted))
	var carry []*op
	for _, o := range j.puts {
		if o.err == nil && o.entry != nil {
			o.moves++
			carry = append(carry, o)
			db.carried.Add(1)
			continue
		}
		delete(db.inflight, o.id)
		close(o.done)
	}
	return carry
}

// delete runs Deletes, with every shard idle: the removals, and the
// shards' deferred evictions, are durable when they are acknowledged.
func (w *writer) delete(dels []*op) {
	db := w.db
	acts := make([][]action, len(db.shards))
	for i, ids := range w.later {
		for _, id := range ids {
			acts[i] = append(acts[i], action{id: id})
		}
		w.later[i] = nil
	}
	db.mu.Lock()
	for _, o := range dels {
		for _, id := range o.ids {
			if e := db.idx.remove(id); e != nil {
				acts[e.shard] = append(acts[e.shard], action{id: id})
				o.n++
			}
		}
	}
	db.mu.Unlock()
	var err error
	for i, a := range acts {
		if len(a) > 0 && err == nil {
			err = db.shards[i].Update(func(tx *bbolt.Tx) error { return writeActions(tx, a) })
		}
	}
	if err = db.commitErr(err, len(dels)); err != nil {
		w.reload()
		for _, o := range dels {
			o.n, o.err = 0, err
		}
	}
	db.guard.refresh(db.shards)
	for _, o := range dels {
		close(o.done)
	}
}

// flushLater applies the deferred evictions (at Close, shards idle).
func (w *writer) flushLater() {
	for i, ids := range w.later {
		if len(ids) == 0 {
			continue
		}
		acts := make([]action, len(ids))
		for k, id := range ids {
			acts[k] = action{id: id}
		}
		if err := w.db.shards[i].Update(func(tx *bbolt.Tx) error { return writeActions(tx, acts) }); err != nil {
			w.db.cfg.log.Error("apply deferred evictions", "err", err)
		}
		w.later[i] = nil
	}
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

// flushAccess writes the access times that changed since the last flush,
// each into its block's shard. Only the writer calls it, with every shard
// idle, so no entry is added or removed meanwhile.
func (db *DB) flushAccess() {
	type rec struct {
		e      *entry
		access int64
		meta   []byte
	}
	recs := make([][]rec, len(db.shards))
	n := 0
	db.mu.Lock()
	for _, e := range db.idx.entries {
		if e.access != e.flushed && !e.pending {
			recs[e.shard] = append(recs[e.shard], rec{e, e.access, encodeMeta(e)})
			n++
		}
	}
	db.mu.Unlock()
	if n == 0 {
		return
	}
	for i, rs := range recs {
		if len(rs) == 0 {
			continue
		}
		err := db.shards[i].Update(func(tx *bbolt.Tx) error {
			meta := tx.Bucket(bucketMeta)
			for _, r := range rs {
				if err := meta.Put(r.e.id[:], r.meta); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			db.cfg.log.Error("flush access times", "err", err)
			continue
		}
		db.mu.Lock()
		for _, r := range rs {
			r.e.flushed = r.access
		}
		db.mu.Unlock()
	}
	db.guard.refresh(db.shards)
}
