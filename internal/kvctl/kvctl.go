package kvctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/units"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// client dials --nodes for a one-shot command: no background health
// checks or repairs, and no log lines (a failure is this command's result,
// reported once).
func (g *globals) client() (*client.Client, error) {
	tc, err := g.sec.tls()
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{Nodes: g.nodeList(), CallTimeout: g.timeout, Replicas: 1,
		Health: client.HealthConfig{Interval: -1, Timeout: g.timeout, EjectAfter: 1, WarmUp: -1}, RepairQueue: -1,
		Logger: slog.New(slog.DiscardHandler), TLS: tc, Token: g.sec.token})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return c, nil
}

// unreachable explains a miss: the client counts a node it cannot reach
// as a miss (a cache never fails a request), but for an operator "not
// found" and "could not ask" are different answers. It returns an error
// naming the nodes that failed a health check, or nil if all answered.
func (g *globals) unreachable(ctx context.Context, c *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	c.Refresh(ctx)
	var bad []string
	for _, m := range c.Members() {
		if m.State != client.Healthy {
			bad = append(bad, fmt.Sprintf("%s (%s)", m.Addr, oneLine(m.LastError)))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", client.ErrUnavailable, strings.Join(bad, ", "))
}

// statsJSON is one node's counters in -o json/yaml.
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
	// Build is the node's binary (cachenode --version).
	Build buildinfo.Info `json:"build"`
}

// shortBuild is the VERSION column: the version and a 12-digit commit.
func (s *statsJSON) shortBuild() string {
	c := s.Build.Commit
	if len(c) > 12 {
		c = c[:12]
	}
	if c == "" || c == buildinfo.Unknown {
		return s.Build.Version
	}
	return s.Build.Version + "@" + c
}

func nodeStats(ctx context.Context, c *client.Client, node string) (*statsJSON, error) {
	s, err := c.NodeStats(ctx, node)
	if err != nil {
		return nil, err
	}
	return &statsJSON{NodeID: s.GetNodeId(), BytesUsed: s.GetBytesUsed(), Capacity: s.GetCapacityBytes(), Blocks: s.GetBlocks(),
		Hits: s.GetHits(), Misses: s.GetMisses(), Evictions: s.GetEvictions(), Puts: s.GetPuts(), PutBytes: s.GetPutBytes(), FileBytes: s.GetFileBytes(),
		Build: buildinfo.Info{Version: s.GetBuild().GetVersion(), Commit: s.GetBuild().GetCommit(), GoVersion: s.GetBuild().GetGoVersion()}}, nil
}

func statsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "stats",
		Short: "Show each node's counters: blocks, bytes, hits, misses, evictions",
		Example: `  kvctl stats --nodes n1:7070,n2:7070
  KVCACHE_NODES=n1:7070 kvctl stats -o json`,
		Args: cobra.NoArgs,
		RunE: runE(g, runStats),
	}
}

type statsRow struct {
	Node  string `json:"node"`
	Error string `json:"error,omitempty"`
	*statsJSON
}

func runStats(ctx context.Context, cmd *cobra.Command, g *globals) error {
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	var rows []statsRow
	failed, refused := 0, 0
	for _, n := range g.nodeList() {
		s, err := nodeStats(ctx, c, n)
		if err != nil {
			failed++
			if errors.Is(err, client.ErrUnauthenticated) || errors.Is(err, client.ErrPermissionDenied) {
				refused++
			}
			rows = append(rows, statsRow{Node: n, Error: err.Error()})
			continue
		}
		rows = append(rows, statsRow{Node: n, statsJSON: s})
	}
	err = g.emit(cmd.OutOrStdout(), rows, func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tID\tBLOCKS\tUSED\tCAPACITY\tHITS\tMISSES\tHIT%\tEVICTIONS\tFILE\tVERSION\tERROR")
		for _, r := range rows {
			if r.statsJSON == nil {
				fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.Node, oneLine(r.Error))
				continue
			}
			s := r.statsJSON
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%d\t%s\t%s\t\n", r.Node, s.NodeID, s.Blocks, units.FormatBytes(float64(s.BytesUsed)), capacity(s.Capacity),
				s.Hits, s.Misses, pct(s.Hits, s.Hits+s.Misses), s.Evictions, units.FormatBytes(float64(s.FileBytes)), s.shortBuild())
		}
		return tw.Flush()
	})
	if err != nil {
		return err
	}
	if refused > 0 && refused == failed {
		// They answered: it is the credentials (--token, a certificate).
		return fmt.Errorf("%d of %d nodes refused the credentials (see their error; --token or KVCACHE_TOKEN)", failed, len(rows))
	}
	if failed > 0 {
		// The reasons are in the output already; say once that it failed.
		return fmt.Errorf("%d of %d nodes did not answer (see their error)", failed, len(rows))
	}
	return nil
}

func capacity(b uint64) string {
	if b == 0 {
		return "unlimited"
	}
	return units.FormatBytes(float64(b))
}

func pct(a, b uint64) string {
	if b == 0 {
		return "-"
	}
	return strconv.FormatFloat(100*float64(a)/float64(b), 'f', 1, 64)
}

func parseNamespace(s string) (prefix.Namespace, error) {
	ns, err := prefix.ParseNamespace(s)
	if err != nil {
		return ns, fmt.Errorf("%w: --ns: %w", ErrUsage, err)
	}
	return ns, nil
}

func parseKey(flag, s string) (prefix.Key, error) {
	k, err := prefix.ParseKey(s)
	if err != nil {
		return k, fmt.Errorf("%w: %s: %w", ErrUsage, flag, err)
	}
	return k, nil
}

func parseKeys(s string) ([]prefix.Key, error) {
	var keys []prefix.Key
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		k, err := parseKey("--keys", f)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: --keys: no keys given", ErrUsage)
	}
	return keys, nil
}

func lookupCmd(g *globals) *cobra.Command {
	var nsHex, keysHex string
	cmd := &cobra.Command{
		Use:     "lookup --ns NS --keys K1,K2,...",
		Short:   "Count how many keys, from the first, are cached",
		Example: `  kvctl lookup --ns 3f...e1 --keys 9a...01,77...c2`,
		Args:    cobra.NoArgs,
		RunE: runE(g, func(ctx context.Context, cmd *cobra.Command, g *globals) error {
			ns, err := parseNamespace(nsHex)
			if err != nil {
				return err
			}
			keys, err := parseKeys(keysHex)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			n, err := c.Lookup(ctx, ns, keys)
			if err != nil {
				return err
			}
			if n < len(keys) {
				if err := g.unreachable(ctx, c); err != nil {
					return fmt.Errorf("%d of %d blocks cached, but: %w", n, len(keys), err)
				}
			}
			res := struct {
				Cached int `json:"cached"`
				Keys   int `json:"keys"`
			}{n, len(keys)}
			return g.emit(cmd.OutOrStdout(), res, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "%d of %d blocks cached from the start\n", n, len(keys))
				return err
			})
		}),
	}
	cmd.Flags().StringVar(&nsHex, "ns", "", "namespace (64 hex digits)")
	cmd.Flags().StringVar(&keysHex, "keys", "", "comma-separated keys (64 hex digits each), in chain order")
	mustRequire(cmd, "ns", "keys")
	return cmd
}

func mustRequire(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic(err) // a flag name typo in this file
		}
	}
}

// headerJSON is a block header in -o json/yaml.
type headerJSON struct {
	Key       string `json:"key"`
	Bytes     int    `json:"bytes"`
	Codec     string `json:"codec"`
	Format    int    `json:"format_version"`
	Tokens    int    `json:"tokens"`
	Layers    int    `json:"layers"`
	KVHeads   int    `json:"kv_heads"`
	HeadDim   int    `json:"head_dim"`
	StartPos  int    `json:"start_pos"`
	Sinks     int    `json:"sinks"`
	RoPE      bool   `json:"keys_post_rope"`
	Parent    string `json:"parent,omitempty"`
	CRC32C    string `json:"crc32c"`
	WrittenTo string `json:"written_to,omitempty"`
}

func getCmd(g *globals) *cobra.Command {
	var nsHex, keyHex, out string
	cmd := &cobra.Command{
		Use:     "get --ns NS --key KEY [--out FILE]",
		Short:   "Fetch one block, print its header, optionally save it",
		Example: `  kvctl get --ns 3f...e1 --key 9a...01 --out block.bin`,
		Args:    cobra.NoArgs,
		RunE: runE(g, func(ctx context.Context, cmd *cobra.Command, g *globals) error {
			ns, err := parseNamespace(nsHex)
			if err != nil {
				return err
			}
			key, err := parseKey("--key", keyHex)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			defer c.Close()
			block, found, err := c.GetBlock(ctx, ns, key)
			if err != nil {
				return err
			}
			if !found {
				if err := g.unreachable(ctx, c); err != nil {
					return fmt.Errorf("block %s: not found: %w", key, err)
				}
				return fmt.Errorf("block %s: not found on %s", key, g.nodes)
			}
			h, err := kvblock.Inspect(block)
			if err != nil {
				return err
			}
			if out != "" {
				if err := os.WriteFile(out, block, 0o644); err != nil {
					return err
				}
			}
			hj := headerJSON{Key: key.String(), Bytes: len(block), Codec: h.Codec.String(), Format: int(h.Version),
				Tokens: h.Shape.Tokens, Layers: h.Shape.Layers, KVHeads: h.Shape.KVHeads, HeadDim: h.Shape.HeadDim,
				StartPos: int(h.StartPos), Sinks: int(h.Sinks), RoPE: h.RoPE, CRC32C: fmt.Sprintf("%08x", h.CRC), WrittenTo: out}
			if h.HasParent {
				hj.Parent = h.Parent.String()
			}
			return g.emit(cmd.OutOrStdout(), hj, func(w io.Writer) error { return printHeader(w, hj) })
		}),
	}
	cmd.Flags().StringVar(&nsHex, "ns", "", "namespace (64 hex digits)")
	cmd.Flags().StringVar(&keyHex, "key", "", "block key (64 hex digits)")
	cmd.Flags().StringVar(&out, "out", "", "write the encoded block to this file")
	mustRequire(cmd, "ns", "key")
	return cmd
}

func printHeader(w io.Writer, h headerJSON) error {
	fmt.Fprintf(w, "key        %s\n", h.Key)
	fmt.Fprintf(w, "bytes      %d\n", h.Bytes)
	fmt.Fprintf(w, "codec      %s (format v%d)\n", h.Codec, h.Format)
	fmt.Fprintf(w, "shape      %d tokens x %d layers x %d kv heads x %d head dim\n", h.Tokens, h.Layers, h.KVHeads, h.HeadDim)
	fmt.Fprintf(w, "positions  %d..%d (sinks %d, keys post-RoPE %v)\n", h.StartPos, h.StartPos+h.Tokens-1, h.Sinks, h.RoPE)
	if h.Parent != "" {
		fmt.Fprintf(w, "parent     %s\n", h.Parent)
	} else {
		fmt.Fprintf(w, "parent     none (first block)\n")
	}
	fmt.Fprintf(w, "crc32c     %s\n", h.CRC32C)
	if h.WrittenTo != "" {
		fmt.Fprintf(w, "written to %s\n", h.WrittenTo)
	}
	return nil
}

type putOptions struct {
	nsHex, keyHex, file, model, tokens, codec string
	layers, heads, dim, blockTokens           int
	seed                                      uint64
}

func putCmd(g *globals) *cobra.Command {
	var o putOptions
	cmd := &cobra.Command{
		Use:   "put [--file FILE --ns NS --key KEY]",
		Short: "Store one block: a file you encoded, or a synthetic one",
		Long: `Store one block. Without --file, put encodes a synthetic block of the
given shape and codec under a namespace derived from --model and the shape,
keyed as block 0 of --tokens, and prints the namespace and key to use with
get and lookup. It reports "stored" or "already present" (a node had it).`,
		Example: `  kvctl put --codec int4
  kvctl put --file block.bin --ns 3f...e1 --key 9a...01`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(ctx context.Context, cmd *cobra.Command, g *globals) error { return runPut(ctx, cmd, g, &o) }),
	}
	f := cmd.Flags()
	f.StringVar(&o.nsHex, "ns", "", "namespace (64 hex digits); default: derived from --model and the shape")
	f.StringVar(&o.keyHex, "key", "", "block key; default: the key of block 0 of --tokens")
	f.StringVar(&o.file, "file", "", "encoded block to store; default: a synthetic block")
	f.StringVar(&o.model, "model", "kvctl-demo", "model name for the derived namespace")
	f.StringVar(&o.tokens, "tokens", "", "comma-separated token ids of the block (default 0..N-1)")
	f.StringVar(&o.codec, "codec", "int8", "codec of the synthetic block: "+codecList())
	f.IntVar(&o.layers, "layers", 4, "synthetic block: KV layers")
	f.IntVar(&o.heads, "kv-heads", 2, "synthetic block: KV heads")
	f.IntVar(&o.dim, "head-dim", 64, "synthetic block: head dim")
	f.IntVar(&o.blockTokens, "block-tokens", 16, "synthetic block: tokens")
	f.Uint64Var(&o.seed, "seed", 1, "synthetic block: random seed")
	return cmd
}

func codecList() string {
	var s []string
	for _, c := range kvblock.Codecs() {
		s = append(s, c.String())
	}
	return strings.Join(s, ", ")
}

func runPut(ctx context.Context, cmd *cobra.Command, g *globals, o *putOptions) error {
	var (
		ns  prefix.Namespace
		err error
	)
	if o.layers < 1 || o.heads < 1 || o.dim < 1 || o.blockTokens < 1 {
		return fmt.Errorf("%w: --layers, --kv-heads, --head-dim and --block-tokens must be positive", ErrUsage)
	}
	if o.file != "" && (o.nsHex == "" || o.keyHex == "") {
		// A derived namespace and key would describe the synthetic shape,
		// not the file's block.
		return fmt.Errorf("%w: --file needs --ns and --key", ErrUsage)
	}
	if o.nsHex != "" {
		if ns, err = parseNamespace(o.nsHex); err != nil {
			return err
		}
	} else if ns, err = prefix.NewNamespace(prefix.Params{Model: o.model, Layers: o.layers, KVHeads: o.heads, HeadDim: o.dim, RopeTheta: 10000, KeysPostRoPE: true, BlockTokens: o.blockTokens}); err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	var key prefix.Key
	if o.keyHex != "" {
		if key, err = parseKey("--key", o.keyHex); err != nil {
			return err
		}
	} else {
		toks := make([]uint32, o.blockTokens)
		for i := range toks {
			toks[i] = uint32(i)
		}
		if o.tokens != "" {
			toks = toks[:0]
			for _, f := range strings.Split(o.tokens, ",") {
				v, err := strconv.ParseUint(strings.TrimSpace(f), 10, 32)
				if err != nil {
					return fmt.Errorf("%w: --tokens: token %q is not a token id", ErrUsage, f)
				}
				toks = append(toks, uint32(v))
			}
		}
		if len(toks) != o.blockTokens {
			return fmt.Errorf("%w: --tokens: %d tokens for a %d-token block", ErrUsage, len(toks), o.blockTokens)
		}
		key = prefix.Next(ns.Root(), toks)
	}
	var data []byte
	if o.file != "" {
		if data, err = os.ReadFile(o.file); err != nil {
			return err
		}
	} else {
		codec, err := kvblock.ParseCodec(o.codec)
		if err != nil {
			return fmt.Errorf("%w: --codec: %w", ErrUsage, err)
		}
		kv := syntheticKV(kvblock.Shape{Tokens: o.blockTokens, Layers: o.layers, KVHeads: o.heads, HeadDim: o.dim}, o.seed)
		if data, err = kvblock.Encode(nil, kv, kvblock.Meta{Codec: codec, RoPE: true, Sinks: -1}); err != nil {
			return err
		}
	}
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	present, err := c.PutStatus(ctx, ns, []client.Block{{Key: key, Data: data}})
	if err != nil {
		return err
	}
	res := struct {
		Result string `json:"result"`
		Bytes  int    `json:"bytes"`
		NS     string `json:"ns"`
		Key    string `json:"key"`
	}{"stored", len(data), ns.String(), key.String()}
	if present[0] {
		res.Result = "already present"
	}
	return g.emit(cmd.OutOrStdout(), res, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "%s (%d bytes)\nns  %s\nkey %s\n", res.Result, res.Bytes, res.NS, res.Key)
		return err
	})
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

func sizeCmd(g *globals) *cobra.Command {
	var (
		layers, heads, dim, tokens, blockTokens int
		cla                                     bool
	)
	cmd := &cobra.Command{
		Use:   "size",
		Short: "KV bytes per token and in total for every codec",
		Long: `Size the KV cache of a model for every codec. Bytes per token include
each block's header and the codec's scales, spread over --block-tokens
tokens (the workers' --block-tokens; default 16).`,
		Example: `  kvctl size --layers 32 --kv-heads 8 --head-dim 128 --tokens 4096   # Llama-3-8B`,
		Args:    cobra.NoArgs,
		RunE: runE(g, func(_ context.Context, cmd *cobra.Command, g *globals) error {
			if layers < 1 || heads < 1 || dim < 1 || blockTokens < 1 || tokens < 0 {
				return fmt.Errorf("%w: --layers, --kv-heads, --head-dim and --block-tokens must be positive, --tokens non-negative", ErrUsage)
			}
			l := layers
			if cla {
				l = (l + 1) / 2
			}
			r := sizeTable(l, heads, dim, tokens, blockTokens)
			return g.emit(cmd.OutOrStdout(), r, func(w io.Writer) error { return printSize(w, r) })
		}),
	}
	f := cmd.Flags()
	f.IntVar(&layers, "layers", 32, "KV-producing layers")
	f.IntVar(&heads, "kv-heads", 8, "KV heads per layer")
	f.IntVar(&dim, "head-dim", 128, "head dimension")
	f.IntVar(&tokens, "tokens", 1, "tokens to size")
	f.IntVar(&blockTokens, "block-tokens", 16, "tokens per cache block (the workers' --block-tokens)")
	f.BoolVar(&cla, "cla", false, "cross-layer attention: adjacent layer pairs share one KV (halves --layers)")
	return cmd
}

type sizeRow struct {
	Codec         string  `json:"codec"`
	BytesPerToken float64 `json:"bytes_per_token"`
	TotalBytes    float64 `json:"total_bytes"`
	VsF16         float64 `json:"vs_f16"`
}

type sizeResult struct {
	Layers      int       `json:"kv_layers"`
	KVHeads     int       `json:"kv_heads"`
	HeadDim     int       `json:"head_dim"`
	Tokens      int       `json:"tokens"`
	BlockTokens int       `json:"block_tokens"`
	Codecs      []sizeRow `json:"codecs"`
}

func sizeTable(layers, heads, dim, tokens, blockTokens int) sizeResult {
	r := sizeResult{Layers: layers, KVHeads: heads, HeadDim: dim, Tokens: tokens, BlockTokens: blockTokens}
	perToken := func(c kvblock.Codec) float64 {
		return float64(kvblock.EncodedSize(c, kvblock.Shape{Tokens: blockTokens, Layers: layers, KVHeads: heads, HeadDim: dim}, 0)) / float64(blockTokens)
	}
	f16 := perToken(kvblock.F16)
	for _, c := range kvblock.Codecs() {
		b := perToken(c)
		r.Codecs = append(r.Codecs, sizeRow{Codec: c.String(), BytesPerToken: b, TotalBytes: b * float64(tokens), VsF16: f16 / b})
	}
	return r
}

func printSize(w io.Writer, r sizeResult) error {
	fmt.Fprintf(w, "%d KV layers x %d kv heads x %d head dim, %d tokens, %d-token blocks\n\n", r.Layers, r.KVHeads, r.HeadDim, r.Tokens, r.BlockTokens)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "codec\tbytes/token\tper token\ttotal\tvs f16\t")
	for _, c := range r.Codecs {
		fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%.2fx\t\n", c.Codec, c.BytesPerToken, units.FormatBytes(c.BytesPerToken), units.FormatBytes(c.TotalBytes), c.VsF16)
	}
	return tw.Flush()
}
