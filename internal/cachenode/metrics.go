package cachenode

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/kvcache/kvcache/pkg/store"
)

// rpcMetrics counts calls by method and code and times them. It is a pair
// of interceptors so handlers stay free of instrumentation.
type rpcMetrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	dataReqs *prometheus.CounterVec
	dataByte prometheus.Counter
}

func newRPCMetrics(reg prometheus.Registerer) *rpcMetrics {
	m := &rpcMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvcache_grpc_calls_total", Help: "gRPC calls handled, by method and status code.",
		}, []string{"method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvcache_grpc_call_seconds", Help: "gRPC call latency by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
		}, []string{"method"}),
	}
	m.dataReqs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvcache_data_requests_total", Help: "Data-plane requests served, by outcome (ok, error).",
	}, []string{"outcome"})
	m.dataByte = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvcache_data_sent_bytes_total", Help: "Block bytes sent over the data plane.",
	})
	reg.MustRegister(m.calls, m.duration, m.dataReqs, m.dataByte)
	return m
}

// dataRequest is the data plane's OnRequest hook.
func (m *rpcMetrics) dataRequest(keys, blocks int, bytes int64, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.dataReqs.WithLabelValues(outcome).Inc()
	m.dataByte.Add(float64(bytes))
}

func (m *rpcMetrics) observe(method string, start time.Time, err error) {
	m.calls.WithLabelValues(method, status.Code(err).String()).Inc()
	m.duration.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (m *rpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	m.observe(info.FullMethod, start, err)
	return resp, err
}

func (m *rpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	start := time.Now()
	err := h(srv, ss)
	m.observe(info.FullMethod, start, err)
	return err
}

// storeCollector exports the store's own counters at scrape time, so the
// store needs no Prometheus dependency.
type storeCollector struct {
	st    store.Store
	descs map[string]*prometheus.Desc
}

func newStoreCollector(st store.Store) *storeCollector {
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, nil) }
	return &storeCollector{st: st, descs: map[string]*prometheus.Desc{
		"bytes":     d("kvcache_store_bytes", "Encoded block bytes held."),
		"capacity":  d("kvcache_store_capacity_bytes", "Byte budget of the store (0 = unlimited)."),
		"blocks":    d("kvcache_store_blocks", "Blocks held."),
		"file":      d("kvcache_store_file_bytes", "Size of the bbolt file."),
		"hits":      d("kvcache_store_hits_total", "Keys found by Get and Lookup."),
		"misses":    d("kvcache_store_misses_total", "Keys not found by Get and Lookup."),
		"evictions": d("kvcache_store_evictions_total", "Blocks evicted to stay within capacity."),
		"puts":      d("kvcache_store_puts_total", "Blocks written."),
		"putbytes":  d("kvcache_store_put_bytes_total", "Block bytes written."),
	}}
}

func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.st.Stats()
	g := func(k string, v int64) {
		ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.GaugeValue, float64(v))
	}
	n := func(k string, v int64) {
		ch <- prometheus.MustNewConstMetric(c.descs[k], prometheus.CounterValue, float64(v))
	}
	g("bytes", s.BytesUsed)
	g("capacity", s.Capacity)
	g("blocks", s.Blocks)
	g("file", s.FileBytes)
	n("hits", s.Hits)
	n("misses", s.Misses)
	n("evictions", s.Evictions)
	n("puts", s.Puts)
	n("putbytes", s.PutBytes)
}
