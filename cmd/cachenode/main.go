// Command cachenode serves a bbolt-backed KV-cache block store over gRPC.
//
//	cachenode --listen :7070 --data /var/lib/kvcache --capacity 20GiB --metrics-listen :9090
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/units"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "cachenode:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg      cachenode.Config
		capacity string
		maxBlock string
		level    slog.Level
		memLimit string
		budget   string
		streams  uint
	)
	flag.StringVar(&cfg.Listen, "listen", ":7070", "gRPC listen address")
	flag.StringVar(&cfg.DataListen, "data-listen", ":7071", "TCP address of the bulk data plane, advertised to clients by port (empty to disable; default: the host of --listen, its port + 1: :7071 for :7070)")
	flag.StringVar(&cfg.Data, "data", "./data", "directory for the block store file")
	flag.StringVar(&capacity, "capacity", "0", "byte budget of the store, in bytes of blocks; its files stay within it + 10% on disk (0 = unlimited), e.g. 20GiB")
	flag.StringVar(&maxBlock, "max-block", "64MiB", "largest block accepted")
	flag.StringVar(&cfg.MetricsListen, "metrics-listen", ":9090", "HTTP address for /metrics and /healthz (empty to disable; default: the host of --listen, its port + 2020: :9090 for :7070)")
	sec := &cfg.Security
	flag.StringVar(&sec.TLSCert, "tls-cert", "", "PEM certificate: TLS on gRPC, the data plane and metrics (reloaded on change and SIGHUP)")
	flag.StringVar(&sec.TLSKey, "tls-key", "", "PEM private key of --tls-cert")
	flag.StringVar(&sec.TLSClientCA, "tls-client-ca", "", "PEM CA bundle: require and verify client certificates (mTLS)")
	flag.StringVar(&sec.AuthTokens, "auth-tokens", "", "tokens file, lines of TOKEN TENANT ROLE [QUOTA] (reloaded on change and SIGHUP; docs/security.md)")
	flag.BoolVar(&sec.Insecure, "insecure", false, "without --auth-tokens or --tls-client-ca, serve every address unauthenticated (default: loopback clients only)")
	flag.Var(quotaFlag{&sec.TenantQuota}, "tenant-quota", "TENANT=BYTES byte budget of a tenant, e.g. acme=20GiB (repeatable)")
	flag.StringVar(&cfg.NodeID, "node-id", "", "node name in stats and logs (default: host name)")
	flag.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 0, "time in-flight calls get on SIGTERM (default 10s)")
	flag.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	gcPercent := flag.Int("gc-percent", 400, "Go GC target percentage when GOGC is not set (Go's default is 100)")
	flag.StringVar(&memLimit, "memory-limit", "0", "Go memory limit, e.g. 4GiB (0 = half the machine's or cgroup's memory unless GOMEMLIMIT is set; -1 = none)")
	flag.StringVar(&budget, "assembly-budget", "0", "bytes of blocks being received over all Put streams; over it a block is rejected with ResourceExhausted (0 = a quarter of the memory limit, at least 2x --max-block)")
	flag.UintVar(&streams, "max-streams", 128, "concurrent gRPC streams per client connection (grpc.MaxConcurrentStreams)")
	flag.DurationVar(&cfg.PutIdleTimeout, "put-idle-timeout", 30*time.Second, "a Put stream that sends no message for this long is closed")
	flag.IntVar(&cfg.MaxReads, "max-reads", 0, "concurrent Lookup calls, and separately Get calls; more get ResourceExhausted (0 = 4 per core, at least 16)")
	flag.IntVar(&cfg.DataConnsPerAddr, "data-conns-per-addr", 64, "data-plane connections per client IP address")
	flag.IntVar(&cfg.MetricsConnsPerAddr, "metrics-conns-per-addr", 8, "connections to --metrics-listen per client IP address; more are closed at once")
	flag.DurationVar(&cfg.DataIdleTimeout, "data-idle-timeout", 2*time.Minute, "a data-plane connection idle this long is closed (a full data plane also closes its longest-idle one for a new client)")
	version := buildinfo.Flag(flag.CommandLine)
	flag.Parse()
	if *version {
		return buildinfo.Print(os.Stdout, "cachenode")
	}
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["data-listen"] {
		cfg.DataListen = cachenode.DerivedAddr(cfg.Listen, cachenode.DataPortOffset, "7071")
	}
	if !set["metrics-listen"] {
		cfg.MetricsListen = cachenode.DerivedAddr(cfg.Listen, cachenode.MetricsPortOffset, "9090")
	}

	if os.Getenv("GOGC") == "" {
		cfg.GCPercent = *gcPercent
	}

	var err error
	if cfg.Capacity, err = units.ParseBytes(capacity); err != nil {
		return err
	}
	mb, err := units.ParseBytes(maxBlock)
	if err != nil {
		return err
	}
	cfg.MaxBlockBytes = int(mb)
	if memLimit == "-1" {
		cfg.MemoryLimit = -1
	} else if cfg.MemoryLimit, err = units.ParseBytes(memLimit); err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	if cfg.AssemblyBudget, err = units.ParseBytes(budget); err != nil {
		return fmt.Errorf("--assembly-budget: %w", err)
	}
	cfg.MaxStreams = uint32(min(streams, 1<<31))
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger.Info("cachenode starting", buildinfo.Get().LogAttr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := cachenode.Start(ctx, cfg)
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := n.Reload(); err != nil {
				cfg.Logger.Error("SIGHUP reload failed; previous credentials stay in force", "err", err)
			} else {
				cfg.Logger.Info("SIGHUP: TLS and tokens files reloaded")
			}
		}
	}()
	return n.Wait()
}

// quotaFlag parses repeated TENANT=BYTES flags.
type quotaFlag struct{ m *map[string]int64 }

func (q quotaFlag) String() string {
	if q.m == nil {
		return ""
	}
	return fmt.Sprint(*q.m)
}

func (q quotaFlag) Set(s string) error {
	tenant, size, ok := strings.Cut(s, "=")
	if !ok || tenant == "" {
		return fmt.Errorf("want TENANT=BYTES, got %q", s)
	}
	b, err := units.ParseBytes(size)
	if err != nil || b <= 0 {
		return fmt.Errorf("tenant %s: quota %q: want a positive byte size such as 20GiB", tenant, size)
	}
	if tenant == "-" { // the shared tenant, as in the tokens file
		tenant = ""
	}
	if *q.m == nil {
		*q.m = map[string]int64{}
	}
	(*q.m)[tenant] = b
	return nil
}
