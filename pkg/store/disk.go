package store

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// The disk bound. With a Capacity of 2.5 MiB or more, the two files
// together take at most Capacity + Capacity/10 on disk (diskSlackDiv):
// bbolt's pages up to each file's high-water mark (the files grow
// sparsely beyond it) plus what the file system adds (extent blocks, as
// stat reports them).
//
// Blocks are charged against Capacity by their length, and bbolt adds to
// that: each block rounds up to whole pages, the bucket and metadata pages
// are rewritten by every commit, the pages a commit frees (its evictions)
// are reusable only from the file's next commit on, and only once every
// read transaction begun before it has ended, an eviction from the file
// not being written waits for that file's next commit, and a block needs
// a contiguous run of free pages, which small page allocations split.
// Measured without this guard (cachenode's TestSoak), that is 15-25% over
// Capacity. The writer keeps the files within the bound by how it commits:
//
//   - each commit may grow its file only up to what the other file leaves
//     of the bound (diskGuard.reserve). bbolt enforces it: a commit that
//     would allocate past that fails with ErrMaxSizeReached before
//     anything is written, and is rolled back;
//   - such a commit is redone in two: its deletions first (a few pages of
//     their own), then, once the other file's commit has ended (so the
//     bound left is exact), its Puts, which can use the pages the
//     deletions freed once the read transactions begun before they were
//     freed have ended (readGate; reads copy blocks out, so they end
//     quickly);
//   - while the Puts still do not fit, it evicts from its own file,
//     leaf-first by last access and beyond what Capacity asks, commits
//     that first and waits for readers again, a few rounds (evictRounds);
//   - if they still do not fit (the file has no leaf left to evict: its
//     blocks are parents of blocks in the other file), the commit ends
//     with its deletions only and the writer carries its Puts to the next
//     commit, of the other file (writer.carry). A Put carried back and
//     forth maxMoves times that still does not fit lets the file grow
//     past the bound (an overshoot). A shard that overshoots overshootRun times in a row (a
//     workload whose bbolt overhead exceeds the slack: blocks of one or
//     two pages) commits without the guard for a while.
//
// Every Put is still acknowledged only after the fsync of the commit that
// wrote it; the deletions committed before it are evictions, which a
// crash in between leaves done. A failed commit is cheap in I/O (nothing
// is written) but not in CPU: without a synced freelist (NoFreelistSync)
// bbolt rebuilds its freelist on rollback by walking every bucket, and the
// eviction scans the leaves. Both happen only when a commit would grow a
// file past the bound, which at large capacities is rare: the slack is
// 10% of the capacity, the per-commit overhead a few batches.
const (
	diskSlackDiv   = 10
	minDiskSlack   = 256 << 10 // below this slack (Capacity < 2.5 MiB) there is no guard
	overshootPause = 64        // commits of a shard without the guard after overshootRun overshoots in a row
	overshootRun   = 4
	evictRounds    = 4                      // evictions for the bound per commit, at most
	readerWait     = 250 * time.Millisecond // longest wait for the readers that pin freed pages
)

// diskGuard shares the disk bound between the shards' commits, which run
// concurrently.
type diskGuard struct {
	bound    int64 // pages, the two files together; 0 = no bound
	pageSize int64

	mu       sync.Mutex
	idle     sync.Cond           // signalled when a shard's commit ends
	reserved [commitShards]int64 // pages a shard's file may reach: its commit's limit while it runs, else its size
	extra    [commitShards]int64 // pages the file system takes for a file beyond its size (extent blocks)
	paths    []string
	busy     [commitShards]bool // a commit of the shard is running
	waiting  [commitShards]bool // the shard waits for the others' commits to end (waitIdle)
	pause    [commitShards]int  // commits left without the guard (overshootPause)
	run      [commitShards]int  // overshoots in a row
}

func newDiskGuard(capacity int64, shards []*bbolt.DB) *diskGuard {
	g := &diskGuard{pageSize: int64(shards[0].Info().PageSize)}
	g.idle.L = &g.mu
	if slack := capacity / diskSlackDiv; capacity > 0 && slack >= minDiskSlack {
		g.bound = (capacity + slack) / g.pageSize
	}
	for i, b := range shards {
		g.paths = append(g.paths, b.Path())
		g.reserved[i] = filePages(b)
		g.measure(i)
	}
	return g
}

// measure records what the file system takes for shard's file beyond its
// pages; g.mu held, or not yet shared.
func (g *diskGuard) measure(shard int) {
	if n, ok := allocatedBytes(g.paths[shard]); ok {
		g.extra[shard] = max(0, (n+g.pageSize-1)/g.pageSize-g.reserved[shard])
	}
}

// refresh records the files' sizes after commits of the writer's own
// (Delete, access-time flushes), made with every shard idle.
func (g *diskGuard) refresh(shards []*bbolt.DB) {
	for i, b := range shards {
		g.release(i, filePages(b), false)
	}
}

// filePages returns the high-water mark of a file, in pages.
func filePages(b *bbolt.DB) int64 {
	var n int64
	_ = b.View(func(tx *bbolt.Tx) error {
		n = tx.Size()
		return nil
	})
	return n / int64(b.Info().PageSize)
}

// reserve returns how many pages shard's file may reach in its next
// commit of Puts and in one of deletions only (0: no limit), need being
// the pages its new blocks take at most, and reserves them against the
// bound. Deletions get delPages more: they rewrite a few leaves, and
// failing them would only mean going past the bound.
func (g *diskGuard) reserve(shard int, size, need int64) (puts, dels int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.bound == 0 || g.pause[shard] > 0 {
		if g.pause[shard] > 0 {
			g.pause[shard]--
		}
		g.reserved[shard] = size
		return 0, 0
	}
	// One page more per file for what its file system may add meanwhile.
	others := g.extra[shard] + 1
	for i, r := range g.reserved {
		if i != shard {
			others += r + g.extra[i] + 1
		}
	}
	room := g.bound - others
	puts = max(size, min(room-delPages, size+need))
	dels = max(size, min(room, puts+delPages))
	g.reserved[shard] = dels
	g.busy[shard] = true
	return puts, dels
}

// delPages is the headroom of a commit of deletions (see reserve).
const delPages = 12

// waitIdle waits until no other shard is committing, so that their
// reservations are their files' sizes, unless another shard is itself
// waiting (for this one): then it returns at once.
func (g *diskGuard) waitIdle(shard int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.waiting[shard] = true
	defer func() { g.waiting[shard] = false }()
	for {
		wait := false
		for i := range g.busy {
			if i != shard && g.busy[i] {
				if g.waiting[i] {
					return
				}
				wait = true
			}
		}
		if !wait {
			return
		}
		g.idle.Wait()
	}
}

// release records shard's file size after its commit; overshot says the
// commit had to exceed the bound.
func (g *diskGuard) release(shard int, size int64, overshot bool) {
	g.mu.Lock()
	g.reserved[shard] = size
	g.measure(shard)
	g.busy[shard] = false
	if g.run[shard]++; !overshot {
		g.run[shard] = 0
	} else if g.run[shard] >= overshootRun {
		g.run[shard] = 0
		g.pause[shard] = overshootPause
	}
	g.mu.Unlock()
	g.idle.Broadcast()
}

// pagesFor is at most how many pages a block of n bytes takes in its own
// bucket (its root leaf: page header, element header, key "v", value).
func (g *diskGuard) pagesFor(n int) int64 {
	return (int64(n) + 16 + 16 + 1 + g.pageSize - 1) / g.pageSize
}

// metaPagesPerCommit is the allowance, in a commit's reservation, for the
// branch and leaf pages it rewrites.
const metaPagesPerCommit = 16

// commitBounded writes acts to shard's file in one transaction that may
// grow the file to limit pages (0: no limit), and returns the file's size
// afterwards.
func (db *DB) commitBounded(shard int, acts []action, limit int64) (int64, error) {
	b := db.shards[shard]
	if limit > 0 {
		// bbolt refuses an allocation past the end when the file, grown by
		// it plus AllocSize, would exceed MaxSize. AllocSize at most the
		// current size (and below the 64 MiB default) keeps that check
		// exact; it is also how far the file is extended (sparsely) when
		// it grows.
		ps := db.guard.pageSize
		alloc := min(int64(defaultAllocSize), max(filePages(b), 1)*ps)
		b.AllocSize = int(alloc)
		b.MaxSize = int((limit+1)*ps + alloc)
		defer func() { b.AllocSize, b.MaxSize = defaultAllocSize, 0 }()
	}
	err := b.Update(func(tx *bbolt.Tx) error { return writeActions(tx, acts) })
	return filePages(b), err
}

// commitSmall commits deletions, which allocate a few pages for the
// leaves they rewrite: within limit if it can, else past it.
func (db *DB) commitSmall(shard int, acts []action, limit int64) (int64, error) {
	size, err := db.commitBounded(shard, acts, limit)
	if errors.Is(err, berrors.ErrMaxSizeReached) {
		db.overshoots.Add(1)
		size, err = db.commitBounded(shard, acts, 0)
	}
	return size, err
}

// commitActs writes a job's actions within the disk bound (see above).
func (db *DB) commitActs(j *job) error {
	g := db.guard
	var need int64 = metaPagesPerCommit
	for _, a := range j.acts {
		if a.block != nil {
			need += g.pagesFor(len(a.block))
		}
	}
	size := filePages(db.shards[j.shard])
	limit, delLimit := g.reserve(j.shard, size, need)
	size, err := db.commitBounded(j.shard, j.acts, limit)
	if !errors.Is(err, berrors.ErrMaxSizeReached) {
		g.release(j.shard, size, false)
		return err
	}
	var dels, puts []action
	for _, a := range j.acts {
		if a.block == nil {
			dels = append(dels, a)
		} else {
			puts = append(puts, a)
		}
	}
	if len(dels) > 0 {
		if size, err = db.commitSmall(j.shard, dels, delLimit); err != nil {
			g.release(j.shard, size, false)
			return err
		}
	}
	if len(puts) == 0 {
		g.release(j.shard, size, false)
		return nil
	}
	// Once the other file's commit has ended, its reservation is its
	// size: what is left of the bound is known exactly.
	g.release(j.shard, size, false)
	g.waitIdle(j.shard)
	db.gates[j.shard].wait(readerWait)
	limit, delLimit = g.reserve(j.shard, size, need)
	size, err = db.commitBounded(j.shard, puts, limit)
	// The pages the file needs are in the other file, split by small
	// allocations, or were pinned by a reader: evict from this file,
	// leaf-first by last access, beyond what Capacity asks, commit that
	// first and retry, a few rounds.
	for round := 0; round < evictRounds && errors.Is(err, berrors.ErrMaxSizeReached); round++ {
		ids := db.evictFrom(j.shard, need)
		if len(ids) == 0 {
			break
		}
		acts := make([]action, len(ids))
		for i, id := range ids {
			acts[i] = action{id: id}
		}
		if size, err = db.commitSmall(j.shard, acts, delLimit); err != nil {
			g.release(j.shard, size, false)
			return err
		}
		g.release(j.shard, size, false)
		db.gates[j.shard].wait(readerWait)
		limit, delLimit = g.reserve(j.shard, size, need)
		size, err = db.commitBounded(j.shard, puts, limit)
	}
	if errors.Is(err, berrors.ErrMaxSizeReached) && len(db.shards) > 1 && !carried(j) {
		// Its deletions are done; the writer's next commit, of the other
		// file, writes the Puts (writer.carry), after deleting that file's
		// least recently used leaves to make room (this file may have none
		// left: its blocks are parents of the other file's).
		j.moved = true
		j.evictOther = db.evictFrom((j.shard+1)%len(db.shards), need)
		g.release(j.shard, size, false)
		return nil
	}
	overshot := errors.Is(err, berrors.ErrMaxSizeReached)
	if overshot {
		db.overshoots.Add(1)
		size, err = db.commitBounded(j.shard, puts, 0)
	}
	g.release(j.shard, size, overshot)
	return err
}

// readGate tells when the read transactions of a shard begun before a
// point in time have ended: those are the ones that pin the pages freed
// before it (bbolt releases a page freed by a commit once every read
// transaction older than that commit has ended). Two counters and an
// epoch, as in RCU: a reader counts itself in the current epoch's counter
// before it opens its transaction; a waiter flips the epoch and waits for
// the previous epoch's counter to drain. A reader that counts itself in
// the old epoch after the waiter saw it drained opens its transaction
// after that, so it pins nothing freed before.
type readGate struct {
	epoch  atomic.Uint32
	active [2]atomic.Int64
}

// enter counts a reader in and returns the token for exit.
func (g *readGate) enter() uint32 {
	e := g.epoch.Load() & 1
	g.active[e].Add(1)
	return e
}

func (g *readGate) exit(e uint32) { g.active[e].Add(-1) }

// wait waits, at most timeout, for the readers counted in before the call
// to exit, and reports whether they did. It polls: they copy a block out
// of the file and end, except a data-plane read writing straight from the
// file to a slow client, which the timeout bounds.
func (g *readGate) wait(timeout time.Duration) bool {
	e := (g.epoch.Add(1) - 1) & 1
	deadline := time.Now().Add(timeout)
	for g.active[e].Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Microsecond)
	}
	return true
}

// carried reports whether a Put of j was carried between the files
// maxMoves times already: then it does not move again.
func carried(j *job) bool {
	for _, o := range j.puts {
		if o.moves >= maxMoves {
			return true
		}
	}
	return false
}

// maxMoves bounds how often a Put goes back and forth between the files
// while neither has room for it (each time, the pages freed meanwhile in
// the other one become reusable).
const maxMoves = 4

// evictFrom removes from the index the least recently used leaves held by
// shard's file, at least pages pages of them, and returns their ids for
// the shard's commit to delete. It runs in the shard's commit goroutine;
// the entries of commits in progress are pending, so never leaves.
func (db *DB) evictFrom(shard int, pages int64) []blockID {
	db.mu.Lock()
	defer db.mu.Unlock()
	var ids []blockID
	for pages > 0 {
		var v *entry
		for _, e := range db.idx.leaves.es {
			if int(e.shard) == shard && (v == nil || db.idx.leaves.less(e, v)) {
				v = e
			}
		}
		if v == nil {
			break
		}
		db.idx.remove(v.id)
		ids = append(ids, v.id)
		pages -= db.guard.pagesFor(int(v.size))
		db.cfg.log.Debug("evict for the disk bound", "id", fmt.Sprintf("%x", v.id), "bytes", v.size)
	}
	db.evictions.Add(int64(len(ids)))
	db.diskEvictions.Add(int64(len(ids)))
	return ids
}
