package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
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
	tokenized     prometheus.Counter // tokens produced tokenizing prompts, refused ones included
	cachedTokens  prometheus.Counter
	genTokens     prometheus.Counter
	fetchedBytes  prometheus.Counter
	ttft          prometheus.Histogram
	cacheErrors   *prometheus.CounterVec // by operation
	appended      prometheus.Counter
	appendDropped prometheus.Counter

	prefills     prometheus.Counter // sequences prefilled: one per request, whatever n
	prefillToks  prometheus.Counter
	prefillRate  prometheus.Histogram // prompt tokens computed per second of prefill
	decodeRate   prometheus.Histogram // decode tokens per second of decode, per request
	itl          prometheus.Histogram // between consecutive tokens of a choice
	e2e          *prometheus.HistogramVec
	rejected     *prometheus.CounterVec // 429s and abandoned waits, by reason
	running      prometheus.Gauge
	waiting      prometheus.Gauge
	queueLimit   prometheus.Gauge
	runningLimit prometheus.Gauge
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
		tokenized:    c("kvcache_worker_tokenized_tokens_total", "Tokens produced tokenizing prompt text, refused prompts included: one over the context stops at context_length tokens."),
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

		prefills:    c("kvcache_worker_prefills_total", "Prompts prefilled (once per request: the n choices of a request share one prefill)."),
		prefillToks: c("kvcache_worker_prefill_tokens_total", "Prompt tokens computed by prefill (not restored from the cache)."),
		prefillRate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvcache_worker_prefill_tokens_per_second", Help: "Prefill throughput of each request: prompt tokens computed per second of prefill.",
			Buckets: prometheus.ExponentialBuckets(16, 2, 14),
		}),
		decodeRate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvcache_worker_decode_tokens_per_second", Help: "Decode throughput of each request: forward passes after the first token per second.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		itl: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvcache_worker_inter_token_latency_seconds", Help: "Time between two consecutive tokens of one choice.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		e2e: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvcache_worker_e2e_request_latency_seconds", Help: "Generation requests from arrival to the last byte of the answer, queue wait included, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"endpoint"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvcache_worker_rejected_requests_total", Help: "Generation requests not run: queue_full (answered 429) or client_gone (left while queued).",
		}, []string{"reason"}),
		running:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvcache_worker_requests_running", Help: "Generation requests admitted and running."}),
		waiting:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvcache_worker_requests_waiting", Help: "Generation requests in the wait queue (the queue depth)."}),
		queueLimit:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvcache_worker_queue_capacity", Help: "The wait queue bound (--max-queue)."}),
		runningLimit: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kvcache_worker_running_capacity", Help: "Generation requests run at once (--max-concurrent)."}),
	}
	reg.MustRegister(m.requests, m.promptTokens, m.tokenized, m.cachedTokens, m.genTokens,
		m.fetchedBytes, m.ttft, m.cacheErrors, m.appended, m.appendDropped,
		m.prefills, m.prefillToks, m.prefillRate, m.decodeRate, m.itl, m.e2e, m.rejected,
		m.running, m.waiting, m.queueLimit, m.runningLimit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"queue_full", "client_gone"} {
		m.rejected.WithLabelValues(r)
	}
	for _, e := range []string{"completions", "chat"} {
		m.e2e.WithLabelValues(e)
	}
	for _, op := range []string{"lookup", "fetch", "decode", "append"} {
		m.cacheErrors.WithLabelValues(op) // export zeros so dashboards see the series
	}
	return m
}

func (m *metrics) observe(r *Result) {
	m.promptTokens.Add(float64(r.PromptTokens))
	m.cachedTokens.Add(float64(r.CachedTokens))
	m.fetchedBytes.Add(float64(r.Timings.FetchedBytes))
}

// prefilled records one prefill of tokens computed in ms milliseconds.
func (m *metrics) prefilled(tokens int, ms float64) {
	m.prefills.Inc()
	m.prefillToks.Add(float64(tokens))
	if tokens > 0 && ms > 0 {
		m.prefillRate.Observe(float64(tokens) / (ms / 1e3))
	}
}

// cacheError counts and logs a cache failure. A call cut short because
// the request itself ended is not the cache's fault and is not counted.
func (w *Worker) cacheError(op string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	w.met.cacheErrors.WithLabelValues(op).Inc()
	if errors.Is(err, client.ErrUnauthenticated) || errors.Is(err, client.ErrPermissionDenied) {
		// Not a node failing: this worker's credentials, until fixed,
		// fail every call.
		w.log.Error("cache "+op+" refused the worker's credentials (--cache-token, --cache-tls-*); recomputing", "err", err)
		return
	}
	w.log.Warn("cache "+op+" failed; recomputing", "err", err)
}
