package store

// CommitCounts returns how many group commits db ran and how many
// operations they carried, for benchmarks.
func CommitCounts(db *DB) (commits, ops int64) { return db.commits.Load(), db.batchedOps.Load() }

// OpenCommitHook is Open with a hook that each shard's commit goroutine
// calls after its transaction (fsync included) returned and before it
// acknowledges any Put of it.
func OpenCommitHook(path string, opts *Options, hook func(shard int)) (*DB, error) {
	cfg := newConfig(opts)
	cfg.committed = hook
	return open(path, cfg)
}

// DiskCounts returns how many commits took db's files past the disk bound,
// how many blocks it evicted beyond Capacity and how many Puts it moved
// to the other file to stay within it.
func DiskCounts(db *DB) (overshoots, evictions, carried int64) {
	return db.overshoots.Load(), db.diskEvictions.Load(), db.carried.Load()
}
