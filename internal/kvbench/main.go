package kvbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/units"
	"github.com/kvcache/kvcache/pkg/kvblock"
)

// ErrUsage reports bad command-line arguments.
var ErrUsage = errors.New("usage")

// Main is the kvbench command: it parses args, runs the benchmark and
// writes the table (or JSON) to stdout and progress to stderr.
func Main(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	if len(args) > 0 && args[0] == NodeCommand {
		return NodeMain(args[1:])
	}
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("kvbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: kvbench [flags]\n\nBenchmarks the kvcache data path, side by side with Redis when one is given.\n\nflags:")
		fs.PrintDefaults()
	}
	g := &cfg.Geometry
	codec := fs.String("codec", g.Codec.String(), "block codec: f16, bf16, fp8_e4m3, int8, int4, int2")
	fs.StringVar(&g.Model, "model", g.Model, "model name (namespace only)")
	fs.IntVar(&g.Layers, "layers", g.Layers, "KV-producing layers")
	fs.IntVar(&g.KVHeads, "kv-heads", g.KVHeads, "KV heads per layer")
	fs.IntVar(&g.HeadDim, "head-dim", g.HeadDim, "head dimension")
	fs.IntVar(&g.BlockTokens, "block-tokens", g.BlockTokens, "tokens per block")
	w := &cfg.Workload
	fs.Uint64Var(&w.Seed, "seed", w.Seed, "workload seed")
	fs.IntVar(&w.Requests, "requests", w.Requests, "requests in the stream")
	fs.IntVar(&w.SystemBlocks, "system-blocks", w.SystemBlocks, "blocks of the shared system prompt")
	fs.IntVar(&w.Documents, "docs", w.Documents, "documents")
	fs.IntVar(&w.DocBlocks, "doc-blocks", w.DocBlocks, "blocks per document")
	fs.IntVar(&w.Conversations, "convs", w.Conversations, "conversations")
	fs.IntVar(&w.Turns, "turns", w.Turns, "turns per conversation")
	fs.Float64Var(&w.DocShare, "doc-share", w.DocShare, "fraction of requests about documents")
	fs.Float64Var(&w.ZipfS, "zipf", w.ZipfS, "Zipf exponent of document and conversation popularity")
	nodes := fs.String("nodes", "", "comma-separated addresses of existing cache nodes (default: start one)")
	fs.StringVar(&cfg.NodeMode, "node-mode", cfg.NodeMode, "how to start the local node: child or inproc")
	fs.StringVar(&cfg.TempDir, "tmp", "", "directory for the node's file and Redis (default $TMPDIR)")
	fs.BoolVar(&cfg.NoSync, "nosync", false, "the local node skips fsync")
	fs.BoolVar(&cfg.NoDataPlane, "no-dataplane", false, "kvcache reads over gRPC streams only (no bulk data plane)")
	fs.BoolVar(&cfg.GRPCRow, "grpc-row", cfg.GRPCRow, "also measure kvcache over gRPC only, in its own column")
	fs.StringVar(&cfg.RedisAddr, "redis", "", "address of an existing Redis to compare with (it is FLUSHALLed)")
	fs.StringVar(&cfg.RedisServer, "redis-server", "", "redis-server binary to start on loopback for the comparison")
	fs.IntVar(&cfg.Writers, "writers", cfg.Writers, "populate writers")
	fs.IntVar(&cfg.Concurrency, "c", cfg.Concurrency, "fetch concurrency")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "length of one timed sample")
	fs.IntVar(&cfg.Rounds, "rounds", cfg.Rounds, "samples per backend (median reported)")
	fs.IntVar(&cfg.LookupKeys, "lookup-keys", cfg.LookupKeys, "keys per Lookup")
	fs.IntVar(&cfg.TargetBlockBytes, "target-block", cfg.TargetBlockBytes, "block size of the uniform target dataset (0 = skip it)")
	fs.Int64Var(&cfg.TargetBytes, "target-bytes", cfg.TargetBytes, "size of the target dataset")
	blockSizes := fs.String("block-sizes", "", "more uniform datasets of these block sizes, e.g. 64KiB,256KiB,4MiB (the fetch-by-block-size chart)")
	fs.BoolVar(&cfg.Fidelity, "fidelity", cfg.Fidelity, "report bytes per token and attention fidelity per codec")
	fs.StringVar(&cfg.PlotDir, "plot", "", "write the charts (PNG and SVG) into this directory")
	fs.BoolVar(&cfg.Decode, "decode", cfg.Decode, "measure int8/int4 decode")
	fs.BoolVar(&cfg.RunWorkload, "workload", cfg.RunWorkload, "populate and fetch the workload")
	fs.BoolVar(&cfg.Lookup, "lookup", cfg.Lookup, "measure Lookup")
	fs.StringVar(&cfg.CPUProfile, "cpuprofile", "", "write this process's CPU profile here")
	fs.StringVar(&cfg.NodeCPUProfile, "node-cpuprofile", "", "write the child node's CPU profile (of the fetch phases) here")
	fs.BoolVar(&cfg.ProfileAll, "node-profile-all", false, "the node's profile covers every phase")
	version := buildinfo.Flag(fs)
	asJSON := fs.Bool("json", false, "write the report as JSON to stdout instead of the table")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if *version {
		return buildinfo.Print(stdout, "kvbench")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	c, err := kvblock.ParseCodec(*codec)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	g.Codec = c
	if *nodes != "" {
		cfg.Nodes = strings.Split(*nodes, ",")
	}
	for _, f := range strings.Split(*blockSizes, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := units.ParseBytes(f)
		if err != nil || n < 1 || n > 64<<20 {
			return fmt.Errorf("%w: -block-sizes: %q is not a block size of 1 B..64 MiB", ErrUsage, f)
		}
		cfg.BlockSizes = append(cfg.BlockSizes, int(n))
	}
	if cfg.NodeMode != "child" && cfg.NodeMode != "inproc" {
		return fmt.Errorf("%w: -node-mode %q", ErrUsage, cfg.NodeMode)
	}
	cfg.Progress = stderr
	rep, err := Run(ctx, cfg)
	if err != nil {
		return err
	}
	if *asJSON {
		err = rep.JSON(stdout)
	} else {
		err = rep.Markdown(stdout)
	}
	if err != nil || cfg.PlotDir == "" {
		return err
	}
	paths, err := rep.WritePlots(cfg.PlotDir)
	for _, p := range paths {
		fmt.Fprintf(stderr, "kvbench: wrote %s\n", p)
	}
	return err
}
