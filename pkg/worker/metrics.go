package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// errBadBlock marks a fetched block that decoded but cannot be imported.
var errBadBlock = errors.New("worker: unusable cached block")

func blockErrorf(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadBlock}, a...)...)
}

// metrics are the worker's Prometheus series, registered on its own
// registry.
type metrics struct {
	requests      *prometheus.CounterVec // by endpoint and HTTP code
	promptTokens  prometheus.Counter
	cachedTokens  prometheus.Counter
	genTokens     prometheus.Counter
	fetchedBytes  prometheus.Counter
	ttft          prometheus.Histogram
	cacheErrors   *prometheus.CounterVec // by operation
	appended      prometheus.Counter
	appendDropped prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvcache_worker_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		promptTokens: c("kvcache_worker_prompt_tokens_total", "Prompt tokens of completed generations."),
		cachedTokens: c("kvcache_worker_cached_tokens_total", "Prompt tokens whose KV came from the cache."),
		genTokens:    c("kvcache_worker_completion_tokens_total", "Generated tokens."),
		fetchedBytes: c("kvcache_worker_fetched_bytes_total", "Encoded KV bytes imported from the cache."),
		ttft: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvcache_worker_ttft_seconds", Help: "Time to first token.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		cacheErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvcache_worker_cache_errors_total", Help: "Cache calls that failed or returned unusable blocks, by operation (each cost a recompute or a lost append, never a failed request).",
		}, []string{"op"}),
		appended:      c("kvcache_worker_appended_blocks_total", "Blocks stored in the cache."),
		appendDropped: c("kvcache_worker_append_dropped_blocks_total", "Blocks not appended because the append queue was full."),
	}
	reg.MustRegister(m.requests, m.promptTokens, m.cachedTokens, m.genTokens,
		m.fetchedBytes, m.ttft, m.cacheErrors, m.appended, m.appendDropped)
	for _, op := range []string{"lookup", "fetch", "decode", "append"} {
		m.cacheErrors.WithLabelValues(op) // export zeros so dashboards see the series
	}
	return m
}

func (m *metrics) observe(r *Result) {
	m.promptTokens.Add(float64(r.PromptTokens))
	m.cachedTokens.Add(float64(r.CachedTokens))
	m.genTokens.Add(float64(len(r.Tokens)))
	m.fetchedBytes.Add(float64(r.Timings.FetchedBytes))
}

// cacheError counts and logs a cache failure. A call cut short because
// the request itself ended is not the cache's fault and is not counted.
func (w *Worker) cacheError(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	w.met.cacheErrors.WithLabelValues(op).Inc()
	w.log.Warn("cache "+op+" failed; recomputing", "err", err)
}
