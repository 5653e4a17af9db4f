// Package kvctl implements the operator CLI: node stats, lookups, raw block
// get/put for debugging, and the KV memory calculator.
package kvctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kvcache/kvcache/internal/units"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// ErrUsage reports a command line that cannot be run.
var ErrUsage = errors.New("usage")

// Command is one subcommand.
type Command struct {
	Name, Summary string
	Run           func(ctx context.Context, e *Env, args []string) error
}

// Env is what a command writes to.
type Env struct {
	Stdout, Stderr io.Writer
}

// commands lists the subcommands in help order. It is fixed at compile
// time: a new subcommand is added here, not registered at run time.
var commands = []Command{
	{"stats", "show node counters (--json for machines)", runStats},
	{"lookup", "how many keys from the first are cached", runLookup},
	{"get", "fetch one block, print its header, optionally save it", runGet},
	{"put", "store one block from a file or a synthetic one", runPut},
	{"size", "KV bytes per token and in total for every codec", runSize},
	{"cluster", "members, health, bytes, blocks and hit ratio (--json)", runCluster},
	{"probe", "exit 0 if a node (--grpc) or worker (--http) is healthy", runProbe},
}

// Main runs the CLI with args (without the program name).
func Main(ctx context.Context, e *Env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(e.Stderr)
		if len(args) == 0 {
			return ErrUsage
		}
		return nil
	}
	for _, c := range commands {
		if c.Name == args[0] {
			return c.Run(ctx, e, args[1:])
		}
	}
	usage(e.Stderr)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, args[0])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: kvctl COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintln(w, "\nRun 'kvctl COMMAND -h' for a command's flags.")
}

// nodeFlags are the flags of every command that talks to nodes.
type nodeFlags struct {
	nodes   string
	timeout time.Duration
}

func (n *nodeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.nodes, "nodes", envOr("KVCACHE_NODES", "localhost:7070"), "comma-separated cache node addresses or dns:///host:port, dnssrv:///name entries (env KVCACHE_NODES)")
	fs.DurationVar(&n.timeout, "timeout", 5*time.Second, "deadline of each call")
}

func (n *nodeFlags) list() []string {
	var out []string
	for _, s := range strings.Split(n.nodes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (n *nodeFlags) client() (*client.Client, error) {
	return client.New(client.Config{Nodes: n.list(), CallTimeout: n.timeout, Replicas: 1})
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func parse(fs *flag.FlagSet, e *Env, args []string) error {
	fs.SetOutput(e.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return nil
}

func runStats(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("stats", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	c, err := nf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	type row struct {
		Node  string `json:"node"`
		Error string `json:"error,omitempty"`
		*statsJSON
	}
	var rows []row
	var errs []error
	for _, n := range nf.list() {
		s, err := c.NodeStats(ctx, n)
		if err != nil {
			rows = append(rows, row{Node: n, Error: err.Error()})
			errs = append(errs, err)
			continue
		}
		rows = append(rows, row{Node: n, statsJSON: &statsJSON{
			NodeID: s.GetNodeId(), BytesUsed: s.GetBytesUsed(), Capacity: s.GetCapacityBytes(), Blocks: s.GetBlocks(),
			Hits: s.GetHits(), Misses: s.GetMisses(), Evictions: s.GetEvictions(), Puts: s.GetPuts(), PutBytes: s.GetPutBytes(), FileBytes: s.GetFileBytes(),
		}})
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
		return errors.Join(errs...)
	}
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tID\tBLOCKS\tUSED\tCAPACITY\tHITS\tMISSES\tHIT%\tEVICTIONS\tFILE")
	for _, r := range rows {
		if r.statsJSON == nil {
			fmt.Fprintf(tw, "%s\terror: %s\n", r.Node, r.Error)
			continue
		}
		s := r.statsJSON
		capStr := "unlimited"
		if s.Capacity > 0 {
			capStr = units.FormatBytes(float64(s.Capacity))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%d\t%s\n", r.Node, s.NodeID, s.Blocks, units.FormatBytes(float64(s.BytesUsed)), capStr,
			s.Hits, s.Misses, pct(s.Hits, s.Hits+s.Misses), s.Evictions, units.FormatBytes(float64(s.FileBytes)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

type statsJSON struct {
	NodeID    string `json:"node_id"`
	BytesUsed uint64 `json:"bytes_used"`
	Capacity  uint64 `json:"capacity_bytes"`
	Blocks    uint64 `json:"blocks"`
	Hits      uint64 `json:"hits"`
	Misses    uint64 `json:"misses"`
	Evictions uint64 `json:"evictions"`
	Puts      uint64 `json:"puts"`
	PutBytes  uint64 `json:"put_bytes"`
	FileBytes uint64 `json:"file_bytes"`
}

func pct(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64)
}

func parseKeys(s string) ([]prefix.Key, error) {
	var keys []prefix.Key
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		k, err := prefix.ParseKey(f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys given", ErrUsage)
	}
	return keys, nil
}

func runLookup(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	nsHex := fs.String("ns", "", "namespace (64 hex digits)")
	keysHex := fs.String("keys", "", "comma-separated keys (64 hex digits each), chain order")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	ns, err := prefix.ParseNamespace(*nsHex)
	if err != nil {
		return err
	}
	keys, err := parseKeys(*keysHex)
	if err != nil {
		return err
	}
	c, err := nf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := c.Lookup(ctx, ns, keys)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "%d of %d blocks cached from the start\n", n, len(keys))
	return nil
}

func runGet(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("get", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	nsHex := fs.String("ns", "", "namespace (64 hex digits)")
	keyHex := fs.String("key", "", "block key (64 hex digits)")
	out := fs.String("out", "", "write the encoded block to this file")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	ns, err := prefix.ParseNamespace(*nsHex)
	if err != nil {
		return err
	}
	key, err := prefix.ParseKey(*keyHex)
	if err != nil {
		return err
	}
	c, err := nf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	blocks, err := c.FetchRaw(ctx, ns, []prefix.Key{key}, nil)
	if err != nil {
		return err
	}
	if len(blocks) == 0 {
		return fmt.Errorf("block %s: not found on %s", key, nf.nodes)
	}
	h, err := kvblock.Inspect(blocks[0])
	if err != nil {
		return err
	}
	printHeader(e.Stdout, key, len(blocks[0]), h)
	if *out != "" {
		if err := os.WriteFile(*out, blocks[0], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.Stdout, "written to %s\n", *out)
	}
	return nil
}

func printHeader(w io.Writer, key prefix.Key, size int, h kvblock.Header) {
	fmt.Fprintf(w, "key        %s\n", key)
	fmt.Fprintf(w, "bytes      %d\n", size)
	fmt.Fprintf(w, "codec      %s (format v%d)\n", h.Codec, h.Version)
	fmt.Fprintf(w, "shape      %d tokens x %d layers x %d kv heads x %d head dim\n", h.Shape.Tokens, h.Shape.Layers, h.Shape.KVHeads, h.Shape.HeadDim)
	fmt.Fprintf(w, "positions  %d..%d (sinks %d, keys post-RoPE %v)\n", h.StartPos, int(h.StartPos)+h.Shape.Tokens-1, h.Sinks, h.RoPE)
	if h.HasParent {
		fmt.Fprintf(w, "parent     %s\n", h.Parent)
	} else {
		fmt.Fprintf(w, "parent     none (first block)\n")
	}
	fmt.Fprintf(w, "crc32c     %08x\n", h.CRC)
}

func runPut(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("put", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	nsHex := fs.String("ns", "", "namespace (64 hex digits); default: derived from --model and the shape")
	keyHex := fs.String("key", "", "block key; default: the key of block 0 of --tokens")
	file := fs.String("file", "", "encoded block to store; default: a synthetic block")
	model := fs.String("model", "kvctl-demo", "model name for the derived namespace")
	tokens := fs.String("tokens", "", "comma-separated token ids of the block (default 0..N-1)")
	codecName := fs.String("codec", "int8", "codec of the synthetic block")
	layers := fs.Int("layers", 4, "synthetic block: KV layers")
	heads := fs.Int("kv-heads", 2, "synthetic block: KV heads")
	dim := fs.Int("head-dim", 64, "synthetic block: head dim")
	ntok := fs.Int("block-tokens", 16, "synthetic block: tokens")
	seed := fs.Uint64("seed", 1, "synthetic block: random seed")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	var ns prefix.Namespace
	var err error
	if *nsHex != "" {
		if ns, err = prefix.ParseNamespace(*nsHex); err != nil {
			return err
		}
	} else if ns, err = prefix.NewNamespace(prefix.Params{Model: *model, Layers: *layers, KVHeads: *heads, HeadDim: *dim, RopeTheta: 10000, KeysPostRoPE: true, BlockTokens: *ntok}); err != nil {
		return err
	}
	var key prefix.Key
	if *keyHex != "" {
		if key, err = prefix.ParseKey(*keyHex); err != nil {
			return err
		}
	} else {
		toks := make([]uint32, *ntok)
		for i := range toks {
			toks[i] = uint32(i)
		}
		if *tokens != "" {
			toks = toks[:0]
			for _, f := range strings.Split(*tokens, ",") {
				v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
				if err != nil {
					return fmt.Errorf("%w: token %q", ErrUsage, f)
				}
				toks = append(toks, uint32(v))
			}
		}
		if len(toks) != *ntok {
			return fmt.Errorf("%w: %d tokens for a %d-token block", ErrUsage, len(toks), *ntok)
		}
		key = prefix.Next(ns.Root(), toks)
	}
	var data []byte
	if *file != "" {
		if data, err = os.ReadFile(*file); err != nil {
			return err
		}
	} else {
		codec, err := kvblock.ParseCodec(*codecName)
		if err != nil {
			return err
		}
		kv := syntheticKV(kvblock.Shape{Tokens: *ntok, Layers: *layers, KVHeads: *heads, HeadDim: *dim}, *seed)
		if data, err = kvblock.Encode(nil, kv, kvblock.Meta{Codec: codec, RoPE: true, Sinks: -1}); err != nil {
			return err
		}
	}
	c, err := nf.client()
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Put(ctx, ns, []client.Block{{Key: key, Data: data}}); err != nil {
		return err
	}
	fmt.Fprintf(e.Stdout, "stored %d bytes\nns  %s\nkey %s\n", len(data), ns, key)
	return nil
}

// syntheticKV fills a block with reproducible values shaped like real KV:
// mostly small, with a few large key channels.
func syntheticKV(s kvblock.Shape, seed uint64) *kvblock.KV {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	n := s.Layers * s.Tokens * s.KVHeads * s.HeadDim
	kv := &kvblock.KV{Shape: s, K: make([]float32, n), V: make([]float32, n)}
	for i := range kv.K {
		kv.K[i] = kvblock.RoundF16(float32(r.NormFloat64()))
		if i%s.HeadDim == 3 {
			kv.K[i] *= 12
		}
		kv.V[i] = kvblock.RoundF16(float32(r.NormFloat64()))
	}
	return kv
}

func runSize(_ context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("size", flag.ContinueOnError)
	layers := fs.Int("layers", 32, "KV-producing layers")
	heads := fs.Int("kv-heads", 8, "KV heads per layer")
	dim := fs.Int("head-dim", 128, "head dimension")
	tokens := fs.Int("tokens", 1, "tokens to size")
	cla := fs.Bool("cla", false, "cross-layer attention: adjacent layer pairs share one KV (halves --layers)")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	if *layers < 1 || *heads < 1 || *dim < 1 || *tokens < 0 {
		return fmt.Errorf("%w: layers, kv-heads and head-dim must be positive, tokens non-negative", ErrUsage)
	}
	l := *layers
	if *cla {
		l = (l + 1) / 2
	}
	fmt.Fprintf(e.Stdout, "%d KV layers x %d kv heads x %d head dim, %d tokens\n\n", l, *heads, *dim, *tokens)
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "codec\tbytes/token\tper token\ttotal\tvs f16\t")
	f16 := kvblock.BytesPerToken(kvblock.F16, l, *heads, *dim)
	for _, c := range kvblock.Codecs() {
		b := kvblock.BytesPerToken(c, l, *heads, *dim)
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.2fx\t\n", c, b, units.FormatBytes(b), units.FormatBytes(b*float64(*tokens)), f16/b)
	}
	return tw.Flush()
}
