package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// DB is the durable Store: a pair of bbolt files per node (Files), the
// shards of a pipelined group commit. Reads run in bbolt read transactions
// concurrently with each other and with the writer (writer.go), which plans
// every commit against the in-memory index and hands the commits to the
// shards in turn, so one batch is written while the previous one is
// fsync'd.
//
// The files never shrink: space freed by Delete and eviction is reused for
// later blocks of the same file but not returned to the file system
// (bbolt.Compact into a new file would, offline).
type DB struct {
	cfg    config
	shards []*bbolt.DB // shards[0] is the file at the path given to Open

	ops        chan *op      // to the writer; unbuffered, so senders queue while it commits
	closing    chan struct{} // closed by Close
	writerDone chan struct{} // closed when the writer has exited
	closed     atomic.Bool

	mu       sync.Mutex      // guards idx and inflight
	idx      *index          // mirror of the files plus the commits in progress
	inflight map[blockID]*op // Puts accepted and not yet acknowledged

	hits, misses, evictions, puts, putBytes atomic.Int64
	commits, batchedOps                     atomic.Int64 // group-commit efficiency, for benchmarks
}

var _ Store = (*DB)(nil)

// commitShards is how many bbolt files a DB spreads its commits over: two,
// so that while one file fsyncs a batch the next batch is written to the
// other (bbolt allows one writer per file, and its commit holds that
// writer until the fsync ends).
const commitShards = 2

// Files returns the files of the store opened at path: path itself, which
// holds every block of a store written before the commit pipeline, and
// path + ".1". Copy or remove them together.
func Files(path string) []string {
	out := []string{path}
	for i := 1; i < commitShards; i++ {
		out = append(out, fmt.Sprintf("%s.%d", path, i))
	}
	return out
}

// Open opens or creates the store files at path (Files). A nil opts means
// defaults. It rebuilds the in-memory index (sizes, parents, access times)
// from the files' metadata, so Stats after a reopen describe the same
// blocks.
func Open(path string, opts *Options) (*DB, error) {
	return open(path, newConfig(opts))
}

func open(path string, cfg config) (*DB, error) {
	db := &DB{
		cfg:        cfg,
		ops:        make(chan *op),
		closing:    make(chan struct{}),
		writerDone: make(chan struct{}),
		inflight:   make(map[blockID]*op),
	}
	fail := func(err error) (*DB, error) {
		for _, b := range db.shards {
			b.Close()
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	for _, f := range Files(path) {
		b, err := openShard(f, &cfg)
		if err != nil {
			return fail(err)
		}
		db.shards = append(db.shards, b)
	}
	db.idx = newIndex(cfg.quotas)
	var dups [commitShards][]blockID
	for i, b := range db.shards {
		if err := b.View(func(tx *bbolt.Tx) (err error) {
			dups[i], err = loadShard(db.idx, tx, uint8(i))
			return err
		}); err != nil {
			return fail(err)
		}
	}
	if cycles := db.idx.breakCycles(); cycles > 0 {
		cfg.log.Warn("store: parent links forming cycles ignored, those blocks are evictable", "blocks", cycles)
	}
	// A block re-put into one file while its eviction from the other was
	// still waiting for that file's next commit can be in both after a
	// crash: the copy the index did not take goes.
	for i, ids := range dups {
		if len(ids) == 0 {
			continue
		}
		acts := make([]action, len(ids))
		for j, id := range ids {
			acts[j] = action{id: id}
		}
		if err := db.shards[i].Update(func(tx *bbolt.Tx) error { return writeActions(tx, acts) }); err != nil {
			return fail(err)
		}
		cfg.log.Warn("store: blocks present in two files after a crash; extra copies removed", "blocks", len(ids))
	}
	cfg.log.Info("store opened", "path", path, "blocks", len(db.idx.entries), "bytes", db.idx.used)
	go db.run()
	return db, nil
}

// openShard opens or creates one bbolt file of a store.
func openShard(path string, cfg *config) (*bbolt.DB, error) {
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: cfg.lockTimeout,
		// The map freelist allocates runs of free pages in O(1); the array
		// one degrades badly with the fragmentation that evicting
		// multi-megabyte blocks causes.
		FreelistType: bbolt.FreelistMapType,
		// Writing the freelist on every commit costs 8 bytes per free page
		// (megabytes once evictions have freed gigabytes); without it Open
		// rebuilds the freelist by walking the tree, which is cheap here
		// because blocks are overflow runs counted from their first page.
		NoFreelistSync:  true,
		InitialMmapSize: int(cfg.mmapSize),
		NoSync:          cfg.noSync,
		// We keep our own counters; bbolt's cost atomics on every read tx.
		NoStatistics: true,
	})
	if err != nil {
		return nil, err
	}
	// Grow the file in 64 MiB steps (default 16 MiB): each growth is a
	// truncate plus fsync inside a commit.
	b.AllocSize = 64 << 20
	if err := b.Update(initLayout); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// read runs fn in read transactions of every shard, with their blocks
// buckets, taken in shard order (so two readers never wait on each other).
func (db *DB) read(ctx context.Context, fn func(blocks []*bbolt.Bucket) error) error {
	if db.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	blocks := make([]*bbolt.Bucket, 0, len(db.shards))
	var view func(i int) error
	view = func(i int) error {
		if i == len(db.shards) {
			return fn(blocks)
		}
		return db.shards[i].View(func(tx *bbolt.Tx) error {
			blocks = append(blocks, tx.Bucket(bucketBlocks))
			return view(i + 1)
		})
	}
	err := view(0)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// value returns the stored bytes of id from whichever shard holds it.
func value(blocks []*bbolt.Bucket, id *blockID) ([]byte, bool) {
	for _, bk := range blocks {
		if b := bk.Bucket(id[:]); b != nil {
			return b.Get(keyValue), true
		}
	}
	return nil, false
}

// touch records an access to the present keys. found may be nil (all).
func (db *DB) touch(ns prefix.Namespace, keys []prefix.Key, found []bool) {
	now := db.cfg.now().UnixNano()
	db.mu.Lock()
	for i, k := range keys {
		if found == nil || found[i] {
			db.idx.touch(makeID(ns, k), now)
		}
	}
	db.mu.Unlock()
}

// Get implements Store. The block is copied out inside the read transaction.
func (db *DB) Get(ctx context.Context, ns prefix.Namespace, key prefix.Key, dst []byte) ([]byte, error) {
	keys := []prefix.Key{key}
	if err := checkKeys(ns, keys); err != nil {
		return nil, err
	}
	id := makeID(ns, key)
	var out []byte
	err := db.read(ctx, func(blocks []*bbolt.Bucket) error {
		v, ok := value(blocks, &id)
		if !ok {
			return ErrNotFound
		}
		out = append(dst[:0], v...)
		return nil
	})
	switch {
	case err == nil:
		db.hits.Add(1)
		db.touch(ns, keys, nil)
	case errors.Is(err, ErrNotFound):
		db.misses.Add(1)
	}
	return out, err
}

// View implements Store. The slices given to fn point into bbolt's mmap.
func (db *DB) View(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, fn func(i int, block []byte, found bool) error) error {
	if err := checkKeys(ns, keys); err != nil {
		return err
	}
	found := make([]bool, len(keys))
	err := db.read(ctx, func(blocks []*bbolt.Bucket) error {
		for i, k := range keys {
			if err := ctx.Err(); err != nil {
				return err
			}
			id := makeID(ns, k)
			var v []byte
			if v, found[i] = value(blocks, &id); found[i] {
				db.hits.Add(1)
			} else {
				db.misses.Add(1)
			}
			if err := fn(i, v, found[i]); err != nil {
				return err
			}
		}
		return nil
	})
	db.touch(ns, keys, found)
	return err
}

// present reports which keys are stored, from the in-memory index under
// one lock (a consistent snapshot without a bbolt read transaction or a
// b-tree seek per key); with prefixOnly it stops at the first absent key.
// A block counts once its commit has finished (not while pending), and a
// block being deleted or evicted stops counting when the writer plans its
// removal, just before the commit that removes it from the file.
func (db *DB) present(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, prefixOnly bool, dst []bool) ([]bool, int, error) {
	if err := checkKeys(ns, keys); err != nil {
		return nil, 0, err
	}
	if db.closed.Load() {
		return nil, 0, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	var found []bool
	if !prefixOnly {
		found = slices.Grow(dst[:0], len(keys))[:len(keys)]
		clear(found)
	}
	run := 0
	broken := false
	id := makeID(ns, prefix.Key{})
	db.mu.Lock()
	for i, k := range keys {
		copy(id[prefix.Size:], k[:])
		e := db.idx.entries[id]
		ok := e != nil && !e.pending
		if !ok {
			if prefixOnly {
				break
			}
			broken = true
			continue
		}
		if found != nil {
			found[i] = true
		}
		if !broken {
			run++
		}
	}
	db.mu.Unlock()
	return found, run, nil
}

// Lookup implements Store.
func (db *DB) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	_, n, err := db.present(ctx, ns, keys, true, nil)
	return n, err
}

// Contains implements Store.
func (db *DB) Contains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) ([]bool, error) {
	return db.AppendContains(ctx, ns, keys, nil)
}

// AppendContains is Contains into dst's storage: it returns dst[:0]
// grown to len(keys), true where the key is present (nil on error). The
// data plane's lookups reuse one buffer per connection with it.
func (db *DB) AppendContains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst []bool) ([]bool, error) {
	found, _, err := db.present(ctx, ns, keys, false, dst)
	return found, err
}

// Stats implements Store. BytesUsed and Blocks include the commit in
// progress, if any.
func (db *DB) Stats() Stats {
	db.mu.Lock()
	used, blocks, tenants := db.idx.used, int64(len(db.idx.entries)), db.idx.usage()
	db.mu.Unlock()
	var size int64
	for _, b := range db.shards {
		if fi, err := os.Stat(b.Path()); err == nil {
			size += fi.Size()
		}
	}
	return Stats{
		BytesUsed: used,
		Capacity:  db.cfg.capacity,
		Blocks:    blocks,
		Hits:      db.hits.Load(),
		Misses:    db.misses.Load(),
		Evictions: db.evictions.Load(),
		Puts:      db.puts.Load(),
		PutBytes:  db.putBytes.Load(),
		FileBytes: size,
		Tenants:   tenants,
	}
}

// Close waits for the commits in progress, writes access times and closes
// the files. Puts not yet taken into a commit fail with ErrClosed.
func (db *DB) Close() error {
	if !db.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(db.closing)
	<-db.writerDone
	var errs []error
	for _, b := range db.shards {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}
