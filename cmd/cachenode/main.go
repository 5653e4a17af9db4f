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
	"syscall"

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
	)
	flag.StringVar(&cfg.Listen, "listen", ":7070", "gRPC listen address")
	flag.StringVar(&cfg.DataListen, "data-listen", ":7071", "TCP address of the bulk data plane, advertised to clients by port (empty to disable)")
	flag.StringVar(&cfg.Data, "data", "./data", "directory for the block store file")
	flag.StringVar(&capacity, "capacity", "0", "byte budget of the store, e.g. 20GiB (0 = unlimited)")
	flag.StringVar(&maxBlock, "max-block", "64MiB", "largest block accepted")
	flag.StringVar(&cfg.MetricsListen, "metrics-listen", ":9090", "HTTP address for /metrics and /healthz (empty to disable)")
	flag.StringVar(&cfg.NodeID, "node-id", "", "node name in stats and logs (default: host name)")
	flag.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", 0, "time in-flight calls get on SIGTERM (default 10s)")
	flag.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	gcPercent := flag.Int("gc-percent", 400, "Go GC target percentage when GOGC is not set (Go's default is 100)")
	version := buildinfo.Flag(flag.CommandLine)
	flag.Parse()
	if *version {
		return buildinfo.Print(os.Stdout, "cachenode")
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
	cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger.Info("cachenode starting", buildinfo.Get().LogAttr())

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	n, err := cachenode.Start(ctx, cfg)
	if err != nil {
		return err
	}
	return n.Wait()
}
