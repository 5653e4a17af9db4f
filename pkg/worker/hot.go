package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvcache/kvcache/internal/hotcache"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// The hot tier: blocks in worker RAM, in front of the cluster.
//
// A bounded LRU (internal/hotcache, Config.HotCacheBytes) shared by every
// request keeps blocks in the form the engine imports: decoded float32 K
// and V, laid out as Sequence.ImportBlock takes them. A hit therefore costs
// no network, no checksum and no decode, only the engine's import (a copy
// rounding to f16), and the blocks of a hit need nothing from the cluster
// at all: a system prompt every request starts with is fetched once per
// worker, or computed once, and then served from RAM, also while the cache
// nodes are down.
//
// What goes in: every block a request imported from the cluster (after
// the same verification as always: checksum, chain, shape, position, f16
// range), and every full block the request computed itself, exactly as
// computed (so with a lossy --codec a block computed here is served from
// the tier losslessly, while the cluster keeps the quantized copy). Both
// are inserted before the request returns, so the same prompt sent again
// at once hits the tier even while the background append is still on its
// way to the cluster.
//
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

// hotBlock is one block as Sequence.ImportBlock takes it. Shared by every
// request that hits it: read-only.
type hotBlock struct{ k, v []float32 }

func (b hotBlock) bytes() int64 { return int64(cap(b.k)+cap(b.v)) * 4 }

// hotTier is the tier and its metrics; a nil *hotTier is a disabled tier.
type hotTier struct {
	c            *hotcache.Cache[hotKey, hotBlock]
	hits, misses prometheus.Counter
}

// newHotTier builds the tier of cfg (nil when disabled) and registers its
// metrics on reg, zeros when disabled so dashboards see the series.
func newHotTier(cfg *Config, reg prometheus.Registerer) *hotTier {
	var h *hotTier
	if cfg.HotCacheBytes > 0 {
		h = &hotTier{c: hotcache.New[hotKey, hotBlock](cfg.HotCacheBytes, &hotcache.Options{TTL: cfg.HotCacheTTL})}
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
			Help: "Bytes the hot tier holds: decoded blocks plus per-entry overhead."},
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

// restore imports the longest prefix of keys the tier holds into seq
// (empty, so block i lands at position i) and returns how many blocks.
func (h *hotTier) restore(ns prefix.Namespace, seq *model.Sequence, keys []prefix.Key, t *Timings) int {
	if h == nil {
		return 0
	}
	t0 := time.Now()
	n := 0
	for ; n < len(keys); n++ {
		b, ok := h.c.Get(hotKey{ns, keys[n]})
		if !ok || seq.ImportBlock(n, b.k, b.v) != nil {
			// ImportBlock fails only on a block of another shape, which
			// the tier never holds: both paths are a miss.
			break
		}
	}
	h.hits.Add(float64(n))
	h.misses.Add(float64(len(keys) - n))
	t.HotBlocks = n
	t.HotMS = msSince(t0)
	return n
}

// put inserts a block the tier may keep; it owns k and v from then on.
func (h *hotTier) put(ns prefix.Namespace, key prefix.Key, k, v []float32) {
	if h == nil {
		return
	}
	b := hotBlock{k, v}
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
	h.keepComputed(ns, seq, tokens, fetched, to)
}

// keepComputed inserts the full blocks [from, to) of seq, keyed along
// tokens (to*B of them).
func (h *hotTier) keepComputed(ns prefix.Namespace, seq *model.Sequence, tokens []int, from, to int) {
	b := seq.BlockTokens()
	keys := prefix.BlockKeys(ns, toU32(tokens[:to*b]), b)
	bl := seq.BlockLen()
	for i := from; i < to; i++ {
		k, v := make([]float32, bl), make([]float32, bl)
		if seq.ExportBlock(i, k, v) != nil {
			return
		}
		h.put(ns, keys[i], k, v)
	}
}
