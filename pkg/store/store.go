// Package store keeps KV-cache blocks on one node: a durable,
// capacity-bounded store on bbolt (DB) and an in-memory implementation with
// the same semantics (Memory) used as a fake.
//
// Blocks are immutable and addressed by (namespace, key). A Put is
// acknowledged only once the block is fsync'd, and concurrent Puts share one
// transaction and one fsync (group commit). When a Put would exceed the byte
// budget, least recently used blocks are evicted leaf-first: a block is never
// evicted while a child of it (a block of the same namespace whose parent is
// its key) is present, because a child without its parent is unreachable by
// a prefix lookup.
//
// The package knows nothing of gRPC; errors.go documents the status code
// each sentinel maps to.
package store

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Store is a block store. Implementations are safe for concurrent use.
//
// Every method takes the context first and returns ctx.Err() when the
// context is done before the work starts.
type Store interface {
	// Put stores block under (ns, key). It is idempotent: if the key is
	// present it returns (false, nil) without rewriting (and counts as an
	// access). Otherwise it verifies the block with Options.Verify and
	// returns (true, nil) only once the block is durable. When Put fails
	// nothing is stored; a context done before the block joins a commit
	// stores nothing and returns ctx.Err(). The caller must not modify block
	// until Put returns.
	Put(ctx context.Context, ns prefix.Namespace, key prefix.Key, block []byte) (stored bool, err error)

	// Get appends the block to dst[:0], reusing dst's capacity, and returns
	// the result. It returns ErrNotFound when the block is absent.
	Get(ctx context.Context, ns prefix.Namespace, key prefix.Key, dst []byte) ([]byte, error)

	// View calls fn for each key in order, inside one read transaction, with
	// the block bytes valid only during the call (DB hands out the mmap'd
	// file without copying; fn must not modify or retain them). A missing key
	// calls fn with a nil block and found == false. An error from fn stops
	// the iteration and is returned as is. fn must not call Put or Delete on
	// the same store: a commit that grows the file past the memory map
	// waits for open read transactions.
	View(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, fn func(i int, block []byte, found bool) error) error

	// Lookup returns how many keys, from the first, are present
	// consecutively, answered from one consistent snapshot. Lookup and
	// Contains are probes: they do not count as accesses for eviction (the
	// Get or View that follows a useful probe does).
	Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error)

	// Contains reports the presence of each key, from one consistent
	// snapshot. Owners of a clustered lookup each hold only some keys.
	Contains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) ([]bool, error)

	// Delete removes the keys that are present and returns how many it
	// removed. On DB the removal is durable when Delete returns.
	Delete(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error)

	// Stats returns a snapshot of the counters.
	Stats() Stats

	// Close releases the store. Later calls fail with ErrClosed; a second
	// Close returns nil.
	Close() error
}

// Stats is a snapshot of a store's counters. Counters count since Open;
// BytesUsed and Blocks describe the current content.
type Stats struct {
	BytesUsed int64 // sum of the lengths of stored blocks (metadata is not counted)
	Capacity  int64 // Options.Capacity; 0 means unlimited
	Blocks    int64 // number of stored blocks
	Hits      int64 // keys found by Get and View
	Misses    int64 // keys not found by Get and View
	Evictions int64 // blocks evicted to make room
	Puts      int64 // blocks written by Put (idempotent no-ops excluded)
	PutBytes  int64 // bytes of blocks written by Put
	FileBytes int64 // size of the bbolt files (Files); 0 for Memory
	// Tenants is the usage per tenant label (WithTenant) that holds blocks
	// or has a quota; the unlabelled blocks are under "".
	Tenants map[string]TenantStats
}

// TenantStats is one tenant's share of a store.
type TenantStats struct {
	BytesUsed int64 // sum of the lengths of the tenant's blocks
	Blocks    int64
	Quota     int64 // Options.Quotas entry; 0 = none
}

// Options configure a store. A nil *Options means all defaults; every zero
// field means its default. Open and NewMemory never modify the Options.
type Options struct {
	// Capacity is the hard budget, in bytes of stored blocks (the sum of
	// len(block); bbolt's pages, bucket headers and the ~50-byte metadata
	// record per block are not counted). Zero means unlimited.
	//
	// DB also keeps its files within Capacity + 10% on disk when Capacity
	// is 2.5 MiB or more (disk.go): the space bbolt adds (whole pages per
	// block, metadata pages, pages freed by evictions but not yet
	// reusable) comes out of that 10%, and when it would not, DB evicts a
	// few more least recently used leaves of the file being written than
	// Capacity asks. The bound holds for blocks of many pages (the rounding
	// to 4 KiB pages alone is 25% for 16 KiB blocks); files written before
	// it, or by a workload it cannot hold, are not shrunk.
	Capacity int64

	// MaxBlockBytes is the largest block Put accepts; bigger blocks fail
	// with ErrTooLarge. Zero means 64 MiB.
	MaxBlockBytes int

	// Verify validates an encoded block and returns its parent key. Put
	// calls it before storing and wraps its error with %w. Nil means the
	// kvblock codec's header and checksum check (see verify.go).
	Verify func(block []byte) (parent prefix.Key, hasParent bool, err error)

	// NoSync skips fsync on commit (DB only). An acknowledged Put may then
	// be lost on a machine crash (not on a process crash: the page cache
	// survives kill -9). Meant for tests and benchmarks; false means durable.
	NoSync bool

	// MaxBatchBytes caps the block bytes of one group commit (DB only). A
	// commit starts as soon as the previous one ends and takes every Put
	// waiting, up to this many bytes and MaxBatchOps operations; there is no
	// timer. Zero means 1/64 of Capacity, between 64 KiB and 256 MiB (256 MiB
	// when Capacity is 0). Smaller batches leave less slack per commit in
	// the files (the pages a commit's own evictions free are reusable only
	// by the file's next commit), which the disk bound (Capacity) needs.
	MaxBatchBytes int

	// MaxBatchOps caps the number of Puts and Deletes in one group commit
	// (DB only). Zero means 1024.
	MaxBatchOps int

	// AccessFlushInterval is how often last-access times, kept in memory,
	// are written to the file (DB only); they are also written on Close. A
	// crash loses at most this much access history, which only makes
	// eviction order after the restart approximate. Zero means one minute;
	// a negative value means only on Close.
	AccessFlushInterval time.Duration

	// InitialMmapSize is the size of bbolt's initial memory map (DB only).
	// A growing file beyond the map forces a remap, which waits for every
	// open read transaction and blocks new ones, so the default maps the
	// whole expected file up front: Capacity + 25% + 64 MiB, or 1 GiB when
	// Capacity is 0. It reserves address space, not memory.
	InitialMmapSize int64

	// LockTimeout is how long Open waits for another process to release the
	// file lock. Zero means 5 s.
	LockTimeout time.Duration

	// Quotas bounds the bytes of blocks per tenant label (see WithTenant).
	// A Put that would take its tenant over its quota first evicts the
	// tenant's own least recently used blocks (leaf-first, as for the
	// capacity) and never another tenant's; with nothing of its own left to
	// evict it fails with ErrQuota. Tenants without an entry (and the
	// unlabelled blocks, tenant "") are bounded by Capacity only. Labels are
	// kept with the blocks, so a quota set at a restart applies to blocks
	// stored before it.
	Quotas map[string]int64

	// Logger receives evictions (debug) and background failures (error).
	// Nil means discard.
	Logger *slog.Logger

	// Now is the clock for last-access times. Nil means time.Now. Tests
	// inject a clock to force an eviction order.
	Now func() time.Time
}

// config is Options with defaults applied, private so that no caller's
// Options is ever modified.
type config struct {
	capacity      int64
	maxBlock      int
	verify        func([]byte) (prefix.Key, bool, error)
	noSync        bool
	maxBatchBytes int
	maxBatchOps   int
	flushEvery    time.Duration
	mmapSize      int64
	lockTimeout   time.Duration
	log           *slog.Logger
	now           func() time.Time
	quotas        map[string]int64
	// committed, when set (tests only, through export_test.go), is called
	// by a shard's commit goroutine after its transaction, fsync
	// included, has returned and before any of its Puts is acknowledged.
	committed func(shard int)
}

func newConfig(o *Options) config {
	if o == nil {
		o = &Options{}
	}
	c := config{
		capacity:      max(o.Capacity, 0),
		maxBlock:      o.MaxBlockBytes,
		verify:        o.Verify,
		noSync:        o.NoSync,
		maxBatchBytes: o.MaxBatchBytes,
		maxBatchOps:   o.MaxBatchOps,
		flushEvery:    o.AccessFlushInterval,
		mmapSize:      o.InitialMmapSize,
		lockTimeout:   o.LockTimeout,
		log:           o.Logger,
		now:           o.Now,
		quotas:        make(map[string]int64, len(o.Quotas)),
	}
	for name, q := range o.Quotas {
		if q > 0 {
			c.quotas[name] = q
		}
	}
	if c.maxBlock <= 0 {
		c.maxBlock = 64 << 20
	}
	if c.verify == nil {
		c.verify = verifyKVBlock
	}
	if c.maxBatchBytes <= 0 {
		// Pages a commit frees by eviction are reusable only by later
		// commits of the same shard, so the files hold up to a batch per
		// shard beyond the capacity: batches of at most 1/64 of it keep
		// that part of the overhead to about 3% (see MaxBatchBytes).
		c.maxBatchBytes = 256 << 20
		if c.capacity > 0 {
			c.maxBatchBytes = int(min(256<<20, max(c.capacity/64, 64<<10)))
		}
	}
	if c.maxBatchOps <= 0 {
		c.maxBatchOps = 1024
	}
	if c.flushEvery == 0 {
		c.flushEvery = time.Minute
	}
	if c.mmapSize <= 0 {
		c.mmapSize = 1 << 30
		if c.capacity > 0 {
			c.mmapSize = c.capacity + c.capacity/4 + 64<<20
		}
	}
	if c.lockTimeout <= 0 {
		c.lockTimeout = 5 * time.Second
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// blockID is the store-wide identity of a block: namespace || key. It is
// also the bbolt key of the block and of its metadata.
type blockID [2 * prefix.Size]byte

func makeID(ns prefix.Namespace, key prefix.Key) blockID {
	var id blockID
	copy(id[:prefix.Size], ns[:])
	copy(id[prefix.Size:], key[:])
	return id
}

func (id blockID) namespace() prefix.Namespace { return prefix.Namespace(id[:prefix.Size]) }

// checkKeys validates a namespace and a key list shared by the read and
// delete methods.
func checkKeys(ns prefix.Namespace, keys []prefix.Key) error {
	if len(keys) == 0 {
		return ErrInvalidKey
	}
	if ns == (prefix.Namespace{}) {
		return ErrInvalidKey
	}
	for _, k := range keys {
		if k == (prefix.Key{}) {
			return ErrInvalidKey
		}
	}
	return nil
}

// checkPut validates the arguments of Put and runs the verifier. It is
// shared by both implementations so they reject exactly the same blocks.
func (c *config) checkPut(ns prefix.Namespace, key prefix.Key, block []byte) (parent blockID, hasParent bool, err error) {
	if ns == (prefix.Namespace{}) || key == (prefix.Key{}) {
		return parent, false, ErrInvalidKey
	}
	if len(block) > c.maxBlock {
		return parent, false, ErrTooLarge
	}
	if c.capacity > 0 && int64(len(block)) > c.capacity {
		return parent, false, ErrFull
	}
	p, hasParent, err := c.verify(block)
	if err != nil {
		return parent, false, fmt.Errorf("store: verify block %x: %w", key[:8], err)
	}
	if hasParent && p == key {
		return parent, false, fmt.Errorf("%w: block %x names itself as its parent", ErrInvalidParent, key[:8])
	}
	if hasParent {
		parent = makeID(ns, p)
	}
	return parent, hasParent, nil
}

// MaxTenantLen is the longest tenant label Put accepts.
const MaxTenantLen = 255

type tenantKey struct{}

// WithTenant returns a context whose Puts label their blocks with tenant,
// an opaque name (at most MaxTenantLen bytes) that Options.Quotas bounds.
// The store does not authenticate it: the caller derives it from who the
// client is. Reads and deletes ignore it; a block already present keeps
// the label it was stored with. Without it a block's label is "".
func WithTenant(ctx context.Context, tenant string) context.Context {
	return context.WithValue(ctx, tenantKey{}, tenant)
}

// TenantOf returns the tenant label of ctx (WithTenant), or "".
func TenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// tenantFor returns the tenant of a Put's context, validated.
func tenantFor(ctx context.Context) (string, error) {
	t := TenantOf(ctx)
	if len(t) > MaxTenantLen {
		return "", fmt.Errorf("%w: tenant label of %d bytes, at most %d", ErrInvalidKey, len(t), MaxTenantLen)
	}
	return t, nil
}
