package cachenode

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/server"
	"github.com/kvcache/kvcache/pkg/store"
)

// rpcMetrics counts calls by method and code and times them. It is a pair
// of interceptors so handlers stay free of instrumentation.
type rpcMetrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
	dataReqs *prometheus.CounterVec
	dataByte prometheus.Counter

	streams     *prometheus.GaugeVec   // streams open, by method
	putBlocks   *prometheus.CounterVec // Put block results, by outcome and code
	readsRefuse *prometheus.CounterVec // Lookup/Get refused by --max-reads
	dataConns   *prometheus.CounterVec // data-plane connections refused or reclaimed
	httpRefused prometheus.Counter     // metrics-listener connections over --metrics-conns-per-addr
	diskShort   prometheus.Gauge       // bytes by which --capacity exceeds free disk at start
	data        atomic.Pointer[dataplane.Server]
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
	m.streams = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kvcache_grpc_streams_open", Help: "gRPC streaming calls in progress, by method.",
	}, []string{"method"})
	m.putBlocks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvcache_put_blocks_total", Help: "Blocks received by Put, by outcome (stored, already_present, rejected) and gRPC code of the rejection (OK otherwise).",
	}, []string{"outcome", "code"})
	m.readsRefuse = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvcache_reads_refused_total", Help: "Lookup and Get calls refused with ResourceExhausted because --max-reads were in progress, by method.",
	}, []string{"method"})
	m.dataConns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvcache_data_conns_refused_total", Help: "Data-plane connections refused (busy, per_addr) or idle ones closed to free a slot (reclaimed).",
	}, []string{"reason"})
	m.httpRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kvcache_metrics_conns_refused_total", Help: "Connections to the metrics listener closed at once because their IP address already had --metrics-conns-per-addr open.",
	})
	m.diskShort = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "kvcache_store_capacity_over_disk_bytes", Help: "At start, how many bytes --capacity exceeds the free space of --data's file system plus the store file (0 = it fits).",
	})
	dataOpen := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kvcache_data_conns_open", Help: "Data-plane connections open.",
	}, func() float64 {
		if d := m.data.Load(); d != nil {
			return float64(d.Conns())
		}
		return 0
	})
	reg.MustRegister(m.calls, m.duration, m.dataReqs, m.dataByte, m.streams, m.putBlocks, m.readsRefuse, m.dataConns, m.httpRefused, m.diskShort, dataOpen)
	return m
}

// putBlock is the server's OnBlock hook.
func (m *rpcMetrics) putBlock(r *kvcachev1.PutResult) {
	outcome := strings.ToLower(strings.TrimPrefix(r.GetOutcome().String(), "OUTCOME_"))
	m.putBlocks.WithLabelValues(outcome, codes.Code(r.GetCode()).String()).Inc()
}

func (m *rpcMetrics) readRefused(method string) { m.readsRefuse.WithLabelValues(method).Inc() }

func (m *rpcMetrics) dataConn(event string) { m.dataConns.WithLabelValues(event).Inc() }

// watchServer exports the Put server's gauges.
func (m *rpcMetrics) watchServer(reg prometheus.Registerer, srv *server.Server) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kvcache_put_assembly_bytes", Help: "Bytes held by blocks being received (bounded by --assembly-budget).",
	}, func() float64 { return float64(srv.AssemblyBytes()) }))
}

// watchData makes kvcache_data_conns_open report d.
func (m *rpcMetrics) watchData(d *dataplane.Server) { m.data.Store(d) }

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
	open := m.streams.WithLabelValues(info.FullMethod)
	open.Inc()
	defer open.Dec()
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

// checkDisk warns (log and metric) when the store's capacity exceeds what
// the file system can still give it: free space plus the file's own size.
// The node still starts; writes then fail with ResourceExhausted once the
// disk is full, and resume when space frees.
func (n *Node) checkDisk(m *rpcMetrics) {
	free, ok := fsFree(n.cfg.Data)
	if !ok || n.cfg.Capacity <= 0 {
		return
	}
	room := free + n.st.Stats().FileBytes
	if short := n.cfg.Capacity - room; short > 0 {
		m.diskShort.Set(float64(short))
		n.log.Warn("--capacity exceeds the free space of the data directory's file system; writes will fail with ResourceExhausted when it fills",
			"capacity", n.cfg.Capacity, "free", free, "file", room-free, "data", n.cfg.Data)
	}
}
