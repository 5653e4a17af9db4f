// Command worker serves an OpenAI-compatible completion API on a
// transformer that reuses KV-cache blocks from a kvcache cluster.
//
//	worker --listen :8080 --cache-nodes n1:7070,n2:7070,n3:7070 --codec int8
//
// Without --model it serves the embedded synthetic model (nothing to
// download); without --cache-nodes every prompt is computed in full.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/units"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/tokenizer"
	"github.com/kvcache/kvcache/pkg/worker"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg                   worker.Config
		listen, nodes, path   string
		codec, hotBytes       string
		replicas              int
		cla, unknownPre, mmap bool
		callTimeout, putGrace time.Duration
		level                 slog.Level
	)
	flag.StringVar(&listen, "listen", ":8080", "HTTP listen address")
	flag.StringVar(&nodes, "cache-nodes", "", "comma-separated cache node addresses (host:port); empty runs without a cache")
	flag.StringVar(&path, "model", "", "GGUF model file (default: the embedded synthetic model)")
	flag.BoolVar(&cla, "cla", false, "embedded model only: cross-layer attention variant (half the KV per token)")
	flag.BoolVar(&mmap, "mmap", false, "use the GGUF file's pages in place (shared with the page cache, faster to load) instead of a private read-only copy in huge pages; on a VM the mapping may be dropped while idle, costing the next request a refault of every weight page")
	flag.BoolVar(&unknownPre, "allow-unknown-pretokenizer", false, "load a BPE model whose tokenizer.ggml.pre is unknown with the default split rules (warns; text is then split unlike the model's training)")
	flag.StringVar(&codec, "codec", "int8", "codec of appended blocks: f16, bf16, fp8_e4m3, int8, int4, int2")
	flag.IntVar(&cfg.BlockTokens, "block-tokens", worker.DefaultBlockTokens, "tokens per cache block (part of the cache namespace)")
	flag.IntVar(&replicas, "replicas", 2, "cache nodes owning each block")
	flag.DurationVar(&cfg.LookupTimeout, "lookup-timeout", 200*time.Millisecond, "deadline of a cache lookup")
	flag.DurationVar(&cfg.FetchTimeout, "fetch-timeout", 200*time.Millisecond, "deadline of a cache fetch, plus --fetch-per-block per block")
	flag.DurationVar(&cfg.FetchPerBlock, "fetch-per-block", 2*time.Millisecond, "fetch deadline added per block")
	flag.DurationVar(&callTimeout, "call-timeout", 2*time.Second, "deadline of each cache RPC attempt (background appends)")
	flag.IntVar(&cfg.MaxConcurrent, "max-concurrent", 1, "forward passes run at once (each already uses every core)")
	flag.IntVar(&cfg.MaxRunning, "max-running", 0, "generation requests run at once, interleaved on the forward-pass slots (default 4 x --max-concurrent)")
	flag.IntVar(&cfg.MaxQueue, "max-queue", 0, "requests waiting for a running place; beyond it answer 429 with Retry-After (default 8 x --max-concurrent; -1: no queue)")
	flag.DurationVar(&cfg.ReadHeaderTimeout, "read-header-timeout", 5*time.Second, "time a client has to send the request headers")
	flag.DurationVar(&cfg.ReadTimeout, "read-timeout", 30*time.Second, "time a client has to send the whole request, body included (408 after it)")
	flag.DurationVar(&cfg.IdleTimeout, "idle-timeout", 120*time.Second, "an idle keep-alive connection is closed after this long")
	flag.StringVar(&hotBytes, "hot-cache-bytes", "256MiB", "byte budget of the in-process tier of hot blocks (decoded, shared by requests, LRU), e.g. 1GiB; 0 disables it")
	flag.DurationVar(&cfg.HotCacheTTL, "hot-cache-ttl", 0, "drop a hot-tier block this long after it was inserted (bounds how long a block deleted from the cluster is still served); 0: until evicted")
	flag.BoolVar(&cfg.PromptOnly, "prompt-only", false, "append only prompt blocks, not blocks completed while generating")
	flag.BoolVar(&cfg.WaitAppend, "wait-append", false, "complete each response only after its blocks' append is acknowledged (at most 5s), so the same prompt sent next is a hit: for tests and demos")
	flag.DurationVar(&putGrace, "shutdown-grace", 10*time.Second, "time in-flight requests and queued appends get on SIGTERM")
	flag.TextVar(&level, "log-level", slog.LevelInfo, "log level: debug, info, warn, error")
	var sec security
	sec.flags(flag.CommandLine)
	version := buildinfo.Flag(flag.CommandLine)
	flag.Parse()
	if *version {
		return buildinfo.Print(os.Stdout, "worker")
	}

	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Logger = log
	log.Info("worker starting", buildinfo.Get().LogAttr())
	var err error
	if cfg.Codec, err = kvblock.ParseCodec(codec); err != nil {
		return fmt.Errorf("--codec: %w", err)
	}
	if cfg.HotCacheBytes, err = units.ParseBytes(hotBytes); err != nil {
		return fmt.Errorf("--hot-cache-bytes: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	start := time.Now()
	if path != "" {
		if cla {
			return errors.New("--cla applies to the embedded model only; a GGUF file declares CLA in its metadata")
		}
		opts := model.LoadOptions{MapFile: mmap, Tokenizer: tokenizer.Options{
			AcceptUnknownPre: unknownPre,
			Warn:             func(msg string) { log.Warn(msg) },
		}}
		if cfg.Model, err = model.Load(ctx, path, opts); err != nil {
			return fmt.Errorf("load model: %w", err)
		}
	} else {
		cfg.Model = model.Default(&model.DefaultOptions{CLA: cla})
	}
	if addrs := splitList(nodes); len(addrs) > 0 {
		ccfg := client.Config{Nodes: addrs, Replicas: replicas, CallTimeout: callTimeout, Logger: log}
		if err := sec.cacheClient(&ccfg); err != nil {
			return err
		}
		c, err := client.New(ccfg)
		if err != nil {
			return fmt.Errorf("cache client: %w", err)
		}
		defer c.Close()
		cfg.Cache = c
	}
	w, err := worker.New(cfg)
	if err != nil {
		return err
	}
	info := w.Info()
	log.Info("model ready", "model", info.Name, "layers", info.Layers, "kv_layers", info.KVLayers,
		"context", info.ContextLen, "kv_bytes_per_token_f16", cfg.Model.KVBytesPerToken(), "load_s", time.Since(start).Seconds())

	handler, err := sec.handler(ctx, w.Handler(), log)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	lis = sec.listener(lis)
	srv := w.NewServer() // the read and idle timeouts
	srv.Handler = handler
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("worker serving", "http", lis.Addr().String(), "cache_nodes", nodes, "codec", cfg.Codec.String(), "block_tokens", w.BlockTokens(), "hot_cache_bytes", cfg.HotCacheBytes)

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), putGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	return errors.Join(err, w.Close(sctx))
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
