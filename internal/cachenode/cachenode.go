// Package cachenode assembles a cache node: the bbolt store, the kvcache.v1
// gRPC service with health and reflection, and the metrics endpoint. The
// cachenode command is a thin flag parser over it; tests start real nodes on
// port 0 through Start.
package cachenode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/server"
	"github.com/kvcache/kvcache/pkg/store"
)

// Config describes one node. Zero values mean the documented defaults.
type Config struct {
	Listen        string // gRPC address; default ":7070"
	MetricsListen string // HTTP address of /metrics and /healthz; "" = none
	// DataListen is the TCP address of the bulk data plane
	// (internal/dataplane, docs/dataplane.md); "" = none. The node
	// advertises its port in Stats.
	DataListen    string
	Data          string // directory of the bbolt file; required
	Capacity      int64  // byte budget; 0 = unlimited
	MaxBlockBytes int    // largest block accepted; default 64 MiB
	NodeID        string // name in Stats and logs; default the host name
	NoSync        bool   // skip fsync: benchmarks of the network path only
	// ShutdownGrace bounds how long in-flight calls may run after the
	// context is cancelled before they are cut. Default 10s.
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	// GCPercent, when positive, sets the process's GC target (the node
	// owns its process). Blocks live in the bbolt mmap, not the Go heap,
	// which holds only request buffers, so a target of 400 costs a few MiB
	// and makes GC cycles, the main source of tail latency in lookups, 4x
	// rarer. 0 leaves the runtime's setting (GOGC) alone.
	GCPercent int
	// Security is TLS, authentication and quotas (security.go); the zero
	// value is protected mode.
	Security Security
	// ReloadInterval is how often the TLS and tokens files are checked
	// for changes. Default 2s.
	ReloadInterval time.Duration

	// MemoryLimit is the Go memory limit of the process
	// (debug.SetMemoryLimit), so the heap of a flood is collected and
	// returned rather than kept for GOGC's next target. 0 means half of
	// the machine's (or cgroup's) memory unless GOMEMLIMIT is set; negative
	// leaves the runtime's setting alone.
	MemoryLimit int64
	// AssemblyBudget bounds the bytes of blocks being received over all
	// Put streams (server.Options.AssemblyBudget). 0 means a quarter of the
	// memory limit (256 MiB when neither is known), and never less than
	// twice MaxBlockBytes.
	AssemblyBudget int64
	// MaxStreams is grpc.MaxConcurrentStreams: streams per client
	// connection. 0 means 128.
	MaxStreams uint32
	// PutIdleTimeout closes a Put stream that sends no message for this
	// long. 0 means 30s.
	PutIdleTimeout time.Duration
	// MaxReads bounds the Lookup calls and, separately, the Get calls in
	// progress; more are refused with ResourceExhausted before their
	// request is read. 0 means 4 per core, at least 16.
	MaxReads int
	// DataConnsPerAddr bounds data-plane connections per client IP. 0
	// means 64.
	DataConnsPerAddr int
	// MetricsConnsPerAddr bounds the connections to MetricsListen from one
	// client IP; more are closed as soon as they are accepted. 0 means 8.
	MetricsConnsPerAddr int
	// DataIdleTimeout closes data-plane connections idle this long (a full
	// data plane also closes its longest-idle connection for a new one).
	// 0 means 2m.
	DataIdleTimeout time.Duration
}

// applyLimits fills in the defaults of the resource limits and sets the
// process's memory limit; it returns the limit in force (0 = none).
func (cfg *Config) applyLimits() int64 {
	if cfg.MaxBlockBytes <= 0 {
		cfg.MaxBlockBytes = 64 << 20
	}
	limit := cfg.MemoryLimit
	switch {
	case limit == 0 && os.Getenv("GOMEMLIMIT") == "":
		limit = physicalMemory() / 2
	case limit < 0:
		limit = 0
	}
	if limit > 0 && cfg.MemoryLimit >= 0 {
		debug.SetMemoryLimit(limit)
	}
	if cur := debug.SetMemoryLimit(-1); cur < math.MaxInt64 {
		limit = cur
	}
	if cfg.AssemblyBudget <= 0 {
		cfg.AssemblyBudget = 256 << 20
		if limit > 0 {
			cfg.AssemblyBudget = limit / 4
		}
	}
	cfg.AssemblyBudget = max(cfg.AssemblyBudget, 2*int64(cfg.MaxBlockBytes))
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 128
	}
	if cfg.PutIdleTimeout <= 0 {
		cfg.PutIdleTimeout = 30 * time.Second
	}
	if cfg.MaxReads <= 0 {
		cfg.MaxReads = defaultReads()
	}
	return limit
}

// Node is a running cache node.
type Node struct {
	cfg     Config
	log     *slog.Logger
	st      *store.DB
	grpc    *grpc.Server
	health  *health.Server
	lis     net.Listener
	data    *dataplane.Server
	dataLis net.Listener
	http    *http.Server
	httpLis net.Listener
	sec     *security
	quotas  map[string]int64 // per tenant, as the store enforces them
	usage   *server.Usage
	done    chan error
	reg     *prometheus.Registry
}

// Registry is the node's own Prometheus registry, what /metrics serves
// (docs/metrics.md lists it; a test checks the two agree).
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// DBFile is the name of the store file inside Config.Data (store.Files
// names the second file beside it).
const DBFile = "blocks.db"

// Start opens the store and starts serving. It returns once both listeners
// are bound, so Addr is valid; serving stops when ctx is cancelled (or on
// Stop), and Wait reports how it ended.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if cfg.Data == "" {
		return nil, errors.New("cachenode: a data directory is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = ":7070"
	}
	if cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	memLimit := cfg.applyLimits()
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.NodeID == "" {
		cfg.NodeID, _ = os.Hostname()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeID)
	if cfg.ReloadInterval <= 0 {
		cfg.ReloadInterval = 2 * time.Second
	}
	sec, err := loadSecurity(cfg.Security)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Data, 0o755); err != nil {
		return nil, fmt.Errorf("cachenode: data directory: %w", err)
	}
	quotas := sec.quotas(cfg.Security.TenantQuota)
	st, err := store.Open(filepath.Join(cfg.Data, DBFile), &store.Options{
		Capacity: cfg.Capacity, MaxBlockBytes: cfg.MaxBlockBytes, NoSync: cfg.NoSync, Logger: log,
		Quotas: quotas,
	})
	if err != nil {
		return nil, fmt.Errorf("cachenode: open store: %w", err)
	}
	log.Info("cache node limits", "memory_limit", memLimit, "assembly_budget", cfg.AssemblyBudget,
		"max_streams", cfg.MaxStreams, "put_idle_timeout", cfg.PutIdleTimeout, "max_reads", cfg.MaxReads)
	n := &Node{cfg: cfg, log: log, st: st, sec: sec, quotas: quotas, usage: server.NewUsage(), done: make(chan error, 1)}
	if err := n.listen(); err != nil {
		st.Close()
		return nil, err
	}
	go n.serve(ctx)
	return n, nil
}

func (n *Node) listen() error {
	reg := prometheus.NewRegistry()
	n.reg = reg
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(newStoreCollector(n.st), buildinfo.Get().Collector())
	m := newRPCMetrics(reg)
	n.checkDisk(m)
	reads := newReadLimiter(n.cfg.MaxReads, m.readRefused)

	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.OK, codes.NotFound, codes.Canceled:
				return logging.LevelDebug
			case codes.Internal, codes.Unknown, codes.DataLoss:
				return logging.LevelError
			}
			return logging.LevelWarn
		}),
	}
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		n.log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	panics := recovery.WithRecoveryHandler(func(p any) error {
		n.log.Error("panic in handler", "panic", p)
		return status.Errorf(codes.Internal, "internal error")
	})
	authUnary, authStream := n.sec.interceptors()
	n.grpc = grpc.NewServer(append(append(server.GRPCOptions(), n.sec.grpcOptions()...),
		grpc.MaxRecvMsgSize(server.MaxMessageBytes),
		grpc.MaxConcurrentStreams(n.cfg.MaxStreams),
		grpc.InTapHandle(reads.tap),
		grpc.ChainUnaryInterceptor(m.unary, logging.UnaryServerInterceptor(logger, logOpts...), recovery.UnaryServerInterceptor(panics), authUnary),
		grpc.ChainStreamInterceptor(m.stream, logging.StreamServerInterceptor(logger, logOpts...), recovery.StreamServerInterceptor(panics), authStream),
	)...)
	var dataAddr string
	if n.cfg.DataListen != "" {
		dl, err := net.Listen("tcp", n.cfg.DataListen)
		if err != nil {
			return fmt.Errorf("cachenode: data listen %s: %w", n.cfg.DataListen, err)
		}
		n.dataLis = n.sec.wrapListener(dl)
		_, port, _ := net.SplitHostPort(dl.Addr().String())
		dataAddr = ":" + port // host-relative: the node may not know its external address
		n.data = dataplane.NewServer(n.st, &dataplane.ServerOptions{
			Logger: n.log, OnRequest: m.dataRequest, Verifier: n.sec.v, OnServed: n.usage.Served,
			StoreClosed:     func(err error) bool { return errors.Is(err, store.ErrClosed) },
			MaxConnsPerAddr: n.cfg.DataConnsPerAddr, IdleTimeout: n.cfg.DataIdleTimeout, OnConn: m.dataConn,
		})
		m.watchData(n.data)
	}
	srv := server.New(n.st, &server.Options{
		MaxBlockBytes: n.cfg.MaxBlockBytes, NodeID: n.cfg.NodeID, DataAddr: dataAddr, Logger: n.log,
		Usage: n.usage, TenantQuota: n.quotaOf, TenantBytes: n.tenantBytes,
		AssemblyBudget: n.cfg.AssemblyBudget, PutIdleTimeout: n.cfg.PutIdleTimeout, OnBlock: m.putBlock,
	})
	m.watchServer(reg, srv)
	kvcachev1.RegisterKVCacheServiceServer(n.grpc, srv)
	n.health = health.NewServer()
	healthpb.RegisterHealthServer(n.grpc, n.health)
	reflection.Register(n.grpc)

	lis, err := net.Listen("tcp", n.cfg.Listen)
	if err != nil {
		n.closeData()
		return fmt.Errorf("cachenode: listen %s: %w", n.cfg.Listen, err)
	}
	n.lis = lis
	if n.cfg.MetricsListen != "" {
		hl, err := net.Listen("tcp", n.cfg.MetricsListen)
		if err != nil {
			lis.Close()
			n.closeData()
			return fmt.Errorf("cachenode: metrics listen %s: %w", n.cfg.MetricsListen, err)
		}
		perAddr := n.cfg.MetricsConnsPerAddr
		if perAddr <= 0 {
			perAddr = defaultMetricsConnsPerAddr
		}
		n.httpLis = n.sec.wrapListener(newPerAddrListener(hl, perAddr, m.httpRefused.Inc), "h2", "http/1.1")
		mux := http.NewServeMux()
		mux.Handle("/metrics", n.sec.metricsHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			resp, err := n.health.Check(r.Context(), &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				http.Error(w, "not serving", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
		})
		// A scrape is a bodiless GET: bound how long a client may hold a
		// connection before, during and between requests.
		n.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	}
	return nil
}

func (n *Node) serve(ctx context.Context) {
	errc := make(chan error, 2)
	go func() { errc <- n.grpc.Serve(n.lis) }()
	if n.data != nil {
		go func() {
			if err := n.data.Serve(n.dataLis); !errors.Is(err, dataplane.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	if n.http != nil {
		go func() {
			if err := n.http.Serve(n.httpLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	n.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	n.health.SetServingStatus(kvcachev1.KVCacheService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	n.log.Info("cache node serving", "grpc", n.lis.Addr().String(), "data", n.DataAddr(), "metrics", n.MetricsAddr(), "capacity", n.cfg.Capacity, "security", n.sec.mode())
	if rs := n.sec.reloaders(); len(rs) > 0 {
		wctx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go auth.Watch(wctx, n.cfg.ReloadInterval, func(r auth.Reloader, err error) {
			if err != nil {
				n.log.Error("reload failed; previous credentials stay in force", "err", err)
				return
			}
			n.log.Info("reloaded credentials", "file", fmt.Sprintf("%T", r))
		}, rs...)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	n.done <- n.shutdown(serveErr)
}

// shutdown drains in-flight calls for up to ShutdownGrace, then closes the
// store so bbolt's file is left clean.
func (n *Node) shutdown(cause error) error {
	n.health.Shutdown() // health checkers see NOT_SERVING and stop routing here
	stopped := make(chan struct{})
	go func() { n.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(n.cfg.ShutdownGrace):
		n.log.Warn("grace period over, cutting remaining calls")
		n.grpc.Stop()
		<-stopped
	}
	// Data-plane requests are cut, not drained: clients fall back to
	// gRPC or another replica, and no read transaction may outlive the
	// store.
	n.closeData()
	if n.http != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = n.http.Shutdown(sctx)
		cancel()
	}
	err := n.st.Close()
	n.log.Info("cache node stopped", "err", errors.Join(cause, err))
	return errors.Join(cause, err)
}

// Addr is the bound gRPC address.
func (n *Node) Addr() string { return n.lis.Addr().String() }

// DataAddr is the bound data-plane address, or "" without one.
func (n *Node) DataAddr() string {
	if n.dataLis == nil {
		return ""
	}
	return n.dataLis.Addr().String()
}

// closeData stops the data plane (if any) and waits for its connections.
func (n *Node) closeData() {
	if n.data != nil {
		_ = n.data.Close()
	} else if n.dataLis != nil {
		_ = n.dataLis.Close()
	}
}

// MetricsAddr is the bound metrics address, or "" without one.
func (n *Node) MetricsAddr() string {
	if n.httpLis == nil {
		return ""
	}
	return n.httpLis.Addr().String()
}

// Wait blocks until the node has stopped and its store is closed.
func (n *Node) Wait() error {
	err := <-n.done
	n.done <- err
	return err
}
