package store

import "errors"

// Sentinel errors. Every error a Store returns either is one of these, wraps
// one of them with %w, is a context error (context.Canceled,
// context.DeadlineExceeded), wraps an error from Options.Verify, or reports
// an I/O failure of the underlying file. The gRPC adapter maps them to status
// codes in one place; the code each maps to is given below.
var (
	// ErrNotFound is returned by Get when the block is absent.
	// gRPC: NotFound.
	ErrNotFound = errors.New("store: block not found")

	// ErrInvalidKey is returned for an all-zero namespace or key (the zero
	// value is never a real SHA-256 digest; it is almost always an unset
	// field) and for an empty key list passed to View, Lookup, Contains or
	// Delete. gRPC: InvalidArgument.
	ErrInvalidKey = errors.New("store: invalid key")

	// ErrTooLarge is returned by Put for a block longer than
	// Options.MaxBlockBytes. Nothing is stored. gRPC: ResourceExhausted (the
	// request exceeds a configured limit; retrying it unchanged fails again).
	ErrTooLarge = errors.New("store: block too large")

	// ErrFull is returned by Put when the block does not fit in
	// Options.Capacity even after evicting every evictable block: the block
	// alone is bigger than the capacity, or the rest of the store is the
	// chain the block extends (never evicted for it) or blocks of commits in
	// progress. Every other block is evictable, so the condition never
	// outlives those commits or a restart. Nothing is stored.
	// gRPC: ResourceExhausted.
	ErrFull = errors.New("store: full")

	// ErrInvalidParent is returned by Put for a block whose header names
	// its own key as its parent, or that would close a cycle of parent
	// links (it is put after a descendant that is also its ancestor). Such
	// blocks could never become leaves, so they would never be evicted.
	// Nothing is stored. gRPC: InvalidArgument.
	ErrInvalidParent = errors.New("store: invalid parent")

	// ErrQuota is returned by Put when the block's tenant (WithTenant) is
	// over its Options.Quotas entry even after evicting every evictable
	// block of its own; another tenant's blocks are never evicted to make
	// room under a quota. Nothing is stored. gRPC: ResourceExhausted.
	ErrQuota = errors.New("store: tenant quota exhausted")

	// ErrNoSpace is returned by Put (and Delete) when the file system of a
	// DB is full. The commit is rolled back, reads go on, and writes
	// succeed again once space is freed. gRPC: ResourceExhausted.
	ErrNoSpace = errors.New("store: no space left on the file system")

	// ErrClosed is returned by every method called on a closed store, and
	// by a Put still waiting for its commit when Close began.
	// gRPC: Unavailable.
	ErrClosed = errors.New("store: closed")
)
