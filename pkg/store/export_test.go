package store

// CommitCounts returns how many group commits db ran and how many
// operations they carried, for benchmarks.
func CommitCounts(db *DB) (commits, ops int64) { return db.commits.Load(), db.batchedOps.Load() }
