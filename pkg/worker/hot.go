package worker

import (
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvcache/kvcache/internal/hotcache"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// The hot tier: blocks in worker RAM, in front of the cluster.
//
// A bounded LRU (internal/hotcache, Config.HotCacheBytes) shared by every
// request keeps verified encoded blocks with their parsed headers. A hit
// costs no network and no checksum or header check, only the engine's
// import (f16 blocks convert straight into the sequence, importBlock; other
// codecs are decoded first), and needs nothing from the cluster at
// all: a system prompt every request starts with is fetched once per
// worker, or computed once, and then served from RAM, also while the
// cache nodes are down.
//
// What goes in: every block a request imported from the cluster, as it
// was fetched (after the same verification as always: checksum, chain,
// shape, position, f16 range), and every full block the request computed
// itself, encoded f16, which is lossless for the engine's KV (so with a
// lossy --codec a block computed here is served from the tier exactly,
// while the cluster keeps the quantized copy). Computed blocks are
// inserted before the request returns. Fetched blocks are copied out of
// the pooled buffers they were fetched into once the request has its
// first token, on a goroutine (keepFetchedAsync, restore.go), so the copy
// (fresh memory: page faults) delays neither that token nor the answer;
// a request that needs one of them meanwhile imports it from the fetch
// buffer itself (importInflight). Either way the same prompt sent again
// at once hits the tier, even while the background append is still on
// its way.
//
// Why encoded and not decoded float32 (which would skip the decode): on
// the 125M F16 model (enginebench -ttft) a 1024-token tier hit importing
// 24 MB of float32 took 21 ms where the remote path decoded and imported
// the same 6.5 MB of f16 in 8 ms, and allocating a float32 copy of every
// fetched block made that remote path 46 ms: the import is bound by
// memory traffic, not by the f16 decode (BenchmarkHotImport). Encoded
// blocks also take half (f16) or less (int8) of the budget.

// Tenancy: the key is the request's namespace (tenant and cache_salt
// folded in, namespaceFor) and the block key, so a block of one namespace
// is never served to a request of another, whatever their tokens.
//
// Staleness: a block's content is a pure function of its namespace and
// tokens (that is what its key hashes), so a tier entry can never be
// wrong, only outlive the cluster's copy (evicted, or deleted by an admin
// with Delete). Like vLLM's prefix cache, the tier then keeps serving it
// until it is evicted; Config.HotCacheTTL (--hot-cache-ttl) bounds that:
// an entry older than the TTL since it was inserted is dropped and
// re-fetched (or recomputed). The worker has no Delete of its own; a
// Delete sent to the nodes takes effect in workers' tiers within the TTL.
// The tier does not re-append its blocks to a cluster that lost them.

// hotKey names a block in the tier.
type hotKey struct {
	ns  prefix.Namespace
	key prefix.Key
}

// hotBlock is one verified encoded block and its header. Shared by every
// request that hits it: read-only.
type hotBlock struct {
	hdr  kvblock.Header
	data []byte
}

func (b *hotBlock) bytes() int64 { return int64(cap(b.data)) + int64(unsafe.Sizeof(*b)) }

// hotTier is the tier and its metrics; a nil *hotTier is a disabled tier.
type hotTier struct {
	c            *hotcache.Cache[hotKey, *hotBlock]
	hits, misses prometheus.Counter

	// inflight maps a fetched block being copied into the tier
	// (keepFetchedAsync) to its batch, whose fetch buffer serves it
	// meanwhile.
	mu       sync.Mutex
	inflight map[hotKey]*inflight
}

// inflight is one request's fetched blocks on their way into the tier.
// Until the copy ends (done), requests import them from the fetch buffers
// themselves, holding mu for reading; the copy takes it for writing
// before the buffers go back to the pool, so none is reused under a
// reader.
type inflight struct {
	mu     sync.RWMutex
	done   bool
	blocks map[prefix.Key]*heldBlock
}

// begin registers blocks (of ns) as in flight.
func (h *hotTier) begin(ns prefix.Namespace, f *inflight) {
	h.mu.Lock()
	for k := range f.blocks {
		h.inflight[hotKey{ns, k}] = f
	}
	h.mu.Unlock()
}

// end unregisters f's blocks, which the tier now holds (or refused), and
// waits for the requests reading them; the buffers are then free.
func (h *hotTier) end(ns prefix.Namespace, f *inflight) {
	h.mu.Lock()
	for k := range f.blocks {
		if hk := (hotKey{ns, k}); h.inflight[hk] == f {
			delete(h.inflight, hk)
		}
	}
	h.mu.Unlock()
	f.mu.Lock()
	f.done = true
	f.mu.Unlock()
}

// importInflight imports block i (key of ns) into seq from an in-flight
// copy's fetch buffer, or from the tier if that copy ended meanwhile.
func (h *hotTier) importInflight(ns prefix.Namespace, seq *model.Sequence, key prefix.Key, i int, kv *kvblock.KV) bool {
	hk := hotKey{ns, key}
	h.mu.Lock()
	f := h.inflight[hk]
	h.mu.Unlock()
	if f == nil {
		return false
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.done {
		b, ok := h.c.Get(hk)
		return ok && importBlock(seq, i, &b.hdr, b.data, kv) == nil
	}
	b := f.blocks[key]
	return importBlock(seq, i, &b.hdr, b.data, kv) == nil
}

// newHotTier builds the tier of cfg (nil when disabled) and registers its
// metrics on reg, zeros when disabled so dashboards see the series.
func newHotTier(cfg *Config, reg prometheus.Registerer) *hotTier {
	var h *hotTier
	if cfg.HotCacheBytes > 0 {
		h = &hotTier{c: hotcache.New[hotKey, *hotBlock](cfg.HotCacheBytes, &hotcache.Options{TTL: cfg.HotCacheTTL}), inflight: map[hotKey]*inflight{}}
	}
	stat := func(f func(hotcache.Stats) float64) func() float64 {
		return func() float64 {
			if h == nil {
				return 0
			}
			return f(h.c.Stats())
		}
	}
	hits := prometheus.NewCounter(prometheus.CounterOpts{Name: "kvcache_worker_hot_cache_hit_blocks_total",
		Help: "Prompt blocks imported from the worker's in-process hot tier."})
	misses := prometheus.NewCounter(prometheus.CounterOpts{Name: "kvcache_worker_hot_cache_miss_blocks_total",
		Help: "Full prompt blocks the hot tier did not hold (then asked of the cluster, or computed)."})
	reg.MustRegister(hits, misses,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvcache_worker_hot_cache_bytes",
			Help: "Bytes the hot tier holds: encoded blocks plus per-entry overhead."},
			stat(func(s hotcache.Stats) float64 { return float64(s.Bytes) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvcache_worker_hot_cache_capacity_bytes",
			Help: "The hot tier's byte budget (--hot-cache-bytes; 0: disabled)."},
			stat(func(s hotcache.Stats) float64 { return float64(s.Budget) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "kvcache_worker_hot_cache_blocks",
			Help: "Blocks the hot tier holds."},
			stat(func(s hotcache.Stats) float64 { return float64(s.Entries) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kvcache_worker_hot_cache_evicted_blocks_total",
			Help: "Blocks the hot tier evicted, least recently used first, to stay within its budget."},
			stat(func(s hotcache.Stats) float64 { return float64(s.Evictions) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "kvcache_worker_hot_cache_expired_blocks_total",
			Help: "Blocks the hot tier dropped because they outlived --hot-cache-ttl."},
			stat(func(s hotcache.Stats) float64 { return float64(s.Expired) })),
	)
	if h != nil {
		h.hits, h.misses = hits, misses
	}
	return h
}

// restore imports the longest prefix of keys the tier holds (or has on
// its way in, importInflight) into seq (empty, so block i lands at
// position i) and returns how many blocks.
func (h *hotTier) restore(ns prefix.Namespace, seq *model.Sequence, keys []prefix.Key, t *Timings) int {
	if h == nil {
		return 0
	}
	t0 := time.Now()
	var kv kvblock.KV
	n := 0
	for ; n < len(keys); n++ {
		// Decode and import fail only on a block that was not verified
		// for this position, which the tier never holds: every path is
		// a miss.
		if b, ok := h.c.Get(hotKey{ns, keys[n]}); ok {
			if importBlock(seq, n, &b.hdr, b.data, &kv) != nil {
				break
			}
		} else if !h.importInflight(ns, seq, keys[n], n, &kv) {
			break
		}
	}
	h.hits.Add(float64(n))
	h.misses.Add(float64(len(keys) - n))
	t.HotBlocks = n
	t.HotMS = msSince(t0)
	return n
}

// importBlock imports the verified block blk (h is its header) into seq
// as block i. An f16 block without sinks goes in straight from its words,
// in one pass (Sequence.ImportBlockHalf); any other is decoded into kv
// first. Either way a value that is not a finite f16 fails it.
func importBlock(seq *model.Sequence, i int, h *kvblock.Header, blk []byte, kv *kvblock.KV) error {
	if k, v, ok := kvblock.F16Payload(h, blk); ok {
		return seq.ImportBlockHalf(i, k, v)
	}
	if err := kvblock.DecodeVerified(h, blk, kv); err != nil {
		return err
	}
	return seq.ImportBlock(i, kv.K, kv.V)
}

// put inserts a verified block (h is its header); the tier owns data from
// then on.
func (h *hotTier) put(ns prefix.Namespace, key prefix.Key, hdr *kvblock.Header, data []byte) {
	if h == nil {
		return
	}
	b := &hotBlock{hdr: *hdr, data: data}
	h.c.Put(hotKey{ns, key}, b, b.bytes())
}

// keepHot inserts into the tier the full blocks of seq this request
// computed: those appendLater stores, from the first block not imported.
// It runs before the request returns, while the request still owns seq.
func (w *Worker) keepHot(ns prefix.Namespace, seq *model.Sequence, prompt, generated []int, fetched int) {
	h := w.hot
	if h == nil {
		return
	}
	n := seq.Len()
	if w.cfg.PromptOnly {
		n = min(n, len(prompt))
	}
	b := w.cfg.BlockTokens
	to := n / b
	if to <= fetched {
		return
	}
	tokens := make([]int, 0, to*b)
	tokens = append(tokens, prompt[:min(len(prompt), to*b)]...)
	tokens = append(tokens, generated[:to*b-len(tokens)]...)
	h.keepComputed(ns, seq, w.shape, tokens, fetched, to)
}

// keepComputed inserts the full blocks [from, to) of seq, each of shape,
// keyed along tokens (to*B of them), encoded f16: the KV exactly as
// computed.
func (h *hotTier) keepComputed(ns prefix.Namespace, seq *model.Sequence, shape kvblock.Shape, tokens []int, from, to int) {
	b := seq.BlockTokens()
	keys := prefix.BlockKeys(ns, toU32(tokens[:to*b]), b)
	for i := from; i < to; i++ {
		m := kvblock.Meta{Codec: kvblock.F16, StartPos: uint32(i * b), RoPE: true, Sinks: -1}
		if i > 0 {
			m.Parent, m.HasParent = keys[i-1], true
		}
		// The KV goes out as f16 words straight into the block's payload
		// (Sequence.ExportBlockHalf): no float32 copy, no second pass.
		data, err := kvblock.EncodeHalfFunc(nil, shape, m, func(k, v []byte) error { return seq.ExportBlockHalf(i, k, v) })
		if err != nil {
			return
		}
		hdr, err := kvblock.ParseHeader(data)
		if err != nil {
			return
		}
		h.put(ns, keys[i], &hdr, data)
	}
}
