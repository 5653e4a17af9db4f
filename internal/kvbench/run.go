// Package kvbench is the kvcache data-path benchmark behind cmd/kvbench:
// a workload generator with realistic prefix sharing (a shared system
// prompt, documents asked many questions, multi-turn conversations, Zipf
// popularity) over a model's KV geometry, driven against kvcache nodes and,
// in the same run, against Redis storing the same encoded blocks.
//
// Phases: populate (durable append with N writers, and the workload's hit
// ratio), lookup (latency of a long chain), fetch (GB/s and KV tokens/s at a
// concurrency, warm) on the workload and on uniform 1 MiB blocks, and the
// codecs' decode rate. Every comparison is measured in the same run, in
// interleaved rounds whose median is reported, because the machine is
// shared and noisy.
package kvbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Config is one benchmark run. Zero fields mean the defaults of
// DefaultConfig.
type Config struct {
	Geometry Geometry
	Workload WorkloadConfig

	Nodes    []string // existing cache nodes; none = start one
	NodeMode string   // how to start it: "child" (a child process, default) or "inproc"
	TempDir  string   // for the node's bbolt file and Redis; default os.TempDir()
	NoSync   bool     // the started node skips fsync (not a durable-append figure then)
	// NoDataPlane makes the kvcache client read over gRPC streams only;
	// GRPCRow adds a gRPC-only kvcache column to the fetch rows, measured
	// in the same run against the same node (DefaultConfig: true).
	NoDataPlane bool
	GRPCRow     bool

	RedisAddr   string // an existing Redis to compare with ("" = none unless RedisServer)
	RedisServer string // redis-server binary to start on a free loopback port ("" = none)

	Writers     int           // populate writers; default 16
	Concurrency int           // fetch concurrency; default 4
	Duration    time.Duration // one timed sample of fetch or lookup; default 2s
	Rounds      int           // interleaved samples per backend, median reported; default 3
	LookupKeys  int           // keys of one Lookup; default 512

	// Target dataset: uniform chains of blocks of about TargetBlockBytes
	// (Llama-3-8B dims, int8, block tokens chosen to fit), for the targets
	// stated at 1 MiB. TargetBytes is its total size. 0 skips it.
	TargetBlockBytes int
	TargetBytes      int64
	TargetChainLen   int // blocks per fetch request; default 16

	Decode      bool // measure int8/int4 decode rates
	RunWorkload bool // populate and fetch the workload (DefaultConfig: true)
	Lookup      bool // the lookup phase (DefaultConfig: true)

	CPUProfile     string // CPU profile of this process (the client side) over the fetch phases
	NodeCPUProfile string // CPU profile of a child node over the fetch phases
	ProfileAll     bool   // the node's profile covers every phase, not only fetch
	Progress       io.Writer
}

// DefaultConfig is what `make bench` runs.
func DefaultConfig() Config {
	return Config{
		Geometry: Llama3_8B(), Workload: DefaultWorkload(), NodeMode: "child",
		Writers: 16, Concurrency: 4, Duration: 2 * time.Second, Rounds: 3, LookupKeys: 512,
		TargetBlockBytes: 1 << 20, TargetBytes: 1 << 30, TargetChainLen: 16,
		Decode: true, RunWorkload: true, Lookup: true, GRPCRow: true,
	}
}

// Row is one line of the report. Values are NaN where not measured.
type Row struct {
	Phase     string  `json:"phase"`
	Metric    string  `json:"metric"`
	Unit      string  `json:"unit"`
	KVCache   float64 `json:"kvcache"`
	KVGRPC    float64 `json:"kvcache_grpc"`    // kvcache with the data plane off
	RedisPipe float64 `json:"redis_pipelined"` // GET/SET/EXISTS, one pipeline per request
	RedisMGET float64 `json:"redis_mget"`
	Lower     bool    `json:"lower_is_better,omitempty"`
	Target    string  `json:"target,omitempty"`
	Met       *bool   `json:"met,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Geometry  string               `json:"geometry"`
	Workload  string               `json:"workload"`
	Target    string               `json:"target_dataset,omitempty"`
	Setup     string               `json:"setup"`
	IdealHit  float64              `json:"ideal_hit_ratio"`
	Rows      []Row                `json:"rows"`
	Samples   map[string][]float64 `json:"samples"`
	DurationS float64              `json:"duration_s"`
}

type runner struct {
	cfg   Config
	p     *progress
	kv    Backend
	kvRPC Backend   // kvcache over gRPC only (GRPCRow): fetch and lookup phases
	redis []Backend // pipelined, MGET (sharing one server)
	rep   *Report
	tmp   string
	pids  []int // server process of each backend (0: none, or this process)
}

// Run runs the benchmark.
func Run(ctx context.Context, cfg Config) (rep *Report, err error) {
	cfg = withDefaults(cfg)
	if err := cfg.Geometry.Check(); err != nil {
		return nil, err
	}
	start := time.Now()
	r := &runner{cfg: cfg, p: newProgress(cfg.Progress), rep: &Report{Samples: map[string][]float64{}}}
	defer r.p.end()
	tmp, err := os.MkdirTemp(cfg.TempDir, "kvbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	r.tmp = tmp

	nodes := cfg.Nodes
	where := fmt.Sprintf("%d existing node(s)", len(nodes))
	if len(nodes) == 0 {
		n, err := startNode(ctx, cfg.NodeMode, tmp, cfg.NoSync, cfg.NodeCPUProfile)
		if err != nil {
			return nil, fmt.Errorf("kvbench: start node: %w", err)
		}
		defer func() {
			if serr := n.stop(); serr != nil && err == nil && !isSignalExit(serr) {
				err = fmt.Errorf("kvbench: node: %w", serr)
			}
		}()
		nodes = []string{n.addr}
		r.pids = append(r.pids, n.pid)
		durability := "durable (fsync)"
		if cfg.NoSync {
			durability = "NoSync"
		}
		where = fmt.Sprintf("1 local node (%s, %s)", cfg.NodeMode, durability)
	}
	if len(r.pids) == 0 {
		r.pids = []int{0} // an existing node: its CPU is not ours to see
	}
	kv, err := newKVCache(nodes, !cfg.NoDataPlane)
	if err != nil {
		return nil, err
	}
	defer kv.Close()
	r.kv = kv
	if cfg.GRPCRow && !cfg.NoDataPlane {
		kr, err := newKVCache(nodes, false)
		if err != nil {
			return nil, err
		}
		defer kr.Close()
		r.kvRPC = kr
	}

	redisAddr := cfg.RedisAddr
	if redisAddr == "" && cfg.RedisServer != "" {
		rs, err := startRedis(ctx, cfg.RedisServer, tmp)
		if err != nil {
			return nil, err
		}
		defer rs.stop()
		redisAddr = rs.addr
		r.pids = append(r.pids, rs.cmd.Process.Pid, rs.cmd.Process.Pid)
		where += ", redis-server on loopback (no persistence)"
	} else if redisAddr != "" {
		where += ", redis at " + redisAddr
		r.pids = append(r.pids, 0, 0)
	}
	if redisAddr != "" {
		if err := flushRedis(ctx, redisAddr); err != nil {
			return nil, err
		}
		pool := max(cfg.Writers, cfg.Concurrency) + 2
		r.redis = []Backend{newRedis(redisAddr, pool, RedisGET), newRedis(redisAddr, pool, RedisMGET)}
		defer func() {
			for _, b := range r.redis {
				b.Close()
			}
		}()
	}
	r.rep.Setup = fmt.Sprintf("%s; GOMAXPROCS %d, %s; writers %d, fetch concurrency %d, %d rounds of %v (median)",
		where, runtime.GOMAXPROCS(0), runtime.Version(), cfg.Writers, cfg.Concurrency, cfg.Rounds, cfg.Duration)
	r.p.note("kvbench: %s", r.rep.Setup)

	if err := r.run(ctx); err != nil {
		return r.rep, err
	}
	r.rep.DurationS = time.Since(start).Seconds()
	return r.rep, nil
}

func isSignalExit(err error) bool {
	var ee interface{ ExitCode() int }
	return errors.As(err, &ee) && ee.ExitCode() == -1
}

func withDefaults(c Config) Config {
	d := DefaultConfig()
	if c.Geometry == (Geometry{}) {
		c.Geometry = d.Geometry
	}
	if c.NodeMode == "" {
		c.NodeMode = d.NodeMode
	}
	if c.Writers <= 0 {
		c.Writers = d.Writers
	}
	if c.Concurrency <= 0 {
		c.Concurrency = d.Concurrency
	}
	if c.Duration <= 0 {
		c.Duration = d.Duration
	}
	if c.Rounds <= 0 {
		c.Rounds = d.Rounds
	}
	if c.LookupKeys <= 0 {
		c.LookupKeys = d.LookupKeys
	}
	if c.TargetChainLen <= 0 {
		c.TargetChainLen = d.TargetChainLen
	}
	return c
}

// dataset is a set of distinct encoded blocks, how they are appended and
// what a fetch asks for.
type dataset struct {
	name    string
	g       Geometry
	ns      prefix.Namespace
	blocks  []Block
	data    [][]byte // encoded blocks; dropped after populate
	appends [][]int  // block indexes of one Put, in stream order
	lookup  bool     // a writer looks up first and appends only the missing suffix
	fetches [][]prefix.Key
}

func (d *dataset) bytes() int64 {
	var n int64
	for _, b := range d.data {
		n += int64(len(b))
	}
	return n
}

func (r *runner) run(ctx context.Context) error {
	cfg := r.cfg
	if cfg.NodeCPUProfile != "" && r.pids[0] != 0 && cfg.ProfileAll {
		_ = syscall.Kill(r.pids[0], syscall.SIGUSR1)
	}
	g := cfg.Geometry
	ns, err := g.Namespace()
	if err != nil {
		return err
	}
	w := GenerateWorkload(ns, g.BlockTokens, cfg.Workload)
	r.rep.Geometry = g.String()
	r.rep.Workload = w.String()
	r.rep.IdealHit = w.IdealHitRatio()
	r.p.note("kvbench: %s\nkvbench: %s", r.rep.Geometry, r.rep.Workload)
	main := &dataset{name: "workload", g: g, ns: ns, blocks: w.Blocks, lookup: true}
	for _, q := range w.Requests {
		main.appends = append(main.appends, q.Blocks)
		main.fetches = append(main.fetches, w.Keys(q))
	}
	if cfg.RunWorkload {
		if err := r.encode(ctx, main); err != nil {
			return err
		}
		if err := r.populate(ctx, main, fmt.Sprintf("populate workload (%s blocks)", fmtBytes(float64(g.BlockBytes())))); err != nil {
			return err
		}
		main.data = nil // fetches need only the keys
	}
	var target *dataset
	if cfg.TargetBlockBytes > 0 && cfg.TargetBytes > 0 {
		target, err = r.targetDataset()
		if err != nil {
			return err
		}
		r.rep.Target = target.g.String()
		if err := r.encode(ctx, target); err != nil {
			return err
		}
		if err := r.populate(ctx, target, fmt.Sprintf("append %s blocks", fmtBytes(float64(target.g.BlockBytes())))); err != nil {
			return err
		}
		target.data = nil
	}
	runtime.GC()

	if cfg.Lookup {
		if err := r.lookupPhase(ctx); err != nil {
			return err
		}
	}
	if cfg.NodeCPUProfile != "" && r.pids[0] != 0 && !cfg.ProfileAll {
		_ = syscall.Kill(r.pids[0], syscall.SIGUSR1)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	if cfg.RunWorkload {
		if err := r.fetchPhase(ctx, main, "fetch workload"); err != nil {
			return err
		}
	}
	if target != nil {
		if err := r.fetchPhase(ctx, target, fmt.Sprintf("fetch %s blocks", fmtBytes(float64(target.g.BlockBytes())))); err != nil {
			return err
		}
	}
	if cfg.Decode {
		r.decodePhase()
	}
	r.judge()
	return nil
}

// targetDataset is uniform chains of blocks near TargetBlockBytes.
func (r *runner) targetDataset() (*dataset, error) {
	g := Llama3_8B()
	g.Model += "/kvbench-target"
	best := 1
	for t := 1; t <= kvblock.MaxTokens; t *= 2 {
		g.BlockTokens = t
		if g.BlockBytes() > r.cfg.TargetBlockBytes*9/8 {
			break
		}
		best = t
	}
	g.BlockTokens = best
	if err := g.Check(); err != nil {
		return nil, err
	}
	ns, err := g.Namespace()
	if err != nil {
		return nil, err
	}
	per := r.cfg.TargetChainLen
	chains := max(1, int(r.cfg.TargetBytes/int64(g.BlockBytes()*per)))
	d := &dataset{name: "target", g: g, ns: ns}
	tokens := make([]uint32, g.BlockTokens)
	for c := range chains {
		parent, has := ns.Root(), false
		var idx []int
		var keys []prefix.Key
		for j := range per {
			fillTokens(tokens, 7, uint64(c)<<20, j)
			k := prefix.Next(parent, tokens)
			b := Block{Key: k, HasParent: has, Pos: uint32(j * g.BlockTokens), Seed: uint64(c)<<32 | uint64(j)*2654435761}
			if has {
				b.Parent = parent
			}
			idx = append(idx, len(d.blocks))
			keys = append(keys, k)
			d.blocks = append(d.blocks, b)
			parent, has = k, true
		}
		d.appends = append(d.appends, idx)
		d.fetches = append(d.fetches, keys)
	}
	return d, nil
}

// encode encodes every block of d on all cores.
func (r *runner) encode(ctx context.Context, d *dataset) error {
	enc := NewEncoder(d.g, 42)
	d.data = make([][]byte, len(d.blocks))
	r.p.begin(fmt.Sprintf("encode %s (%s)", d.name, d.g.Codec), int64(len(d.blocks)))
	defer r.p.end()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, runtime.GOMAXPROCS(0))
	for w := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(d.blocks) || ctx.Err() != nil {
					return
				}
				b, err := enc.Encode(nil, d.blocks[i])
				if err != nil {
					errs[w] = err
					return
				}
				d.data[i] = b
				r.p.add(1, int64(len(b)))
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// populate appends d to every backend with cfg.Writers writers and records
// the append rate (distinct bytes over wall time) and, for a workload
// replay, the hit ratio.
func (r *runner) populate(ctx context.Context, d *dataset, phase string) error {
	total := d.bytes()
	row := newRow(fmt.Sprintf("%s, %d writers", phase, r.cfg.Writers), "append", "GB/s")
	hitRow := newRow(fmt.Sprintf("workload replay, %d writers", r.cfg.Writers), fmt.Sprintf("hit ratio (ideal %.1f%%)", 100*r.rep.IdealHit), "%")
	for bi, b := range r.backends()[:r.populateBackends()] {
		r.p.begin(fmt.Sprintf("%s: %s", phase, b.Name()), int64(len(d.appends)))
		var next atomic.Int64
		var hits, asked atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, r.cfg.Writers)
		t0 := time.Now()
		for range r.cfg.Writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(d.appends) || ctx.Err() != nil {
						return
					}
					idx := d.appends[i]
					n := 0
					if d.lookup {
						keys := make([]prefix.Key, len(idx))
						for j, bi := range idx {
							keys[j] = d.blocks[bi].Key
						}
						var err error
						if n, err = b.Lookup(ctx, d.ns, keys); err != nil {
							errc <- fmt.Errorf("%s lookup: %w", b.Name(), err)
							return
						}
						hits.Add(int64(n))
						asked.Add(int64(len(idx)))
					}
					var blocks []client.Block
					var nb int64
					for _, bi := range idx[n:] {
						blocks = append(blocks, client.Block{Key: d.blocks[bi].Key, Data: d.data[bi]})
						nb += int64(len(d.data[bi]))
					}
					if len(blocks) > 0 {
						if err := b.Put(ctx, d.ns, blocks); err != nil {
							errc <- fmt.Errorf("%s put: %w", b.Name(), err)
							return
						}
					}
					r.p.add(1, nb)
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		r.p.end()
		select {
		case err := <-errc:
			return err
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		gbs := float64(total) / el.Seconds() / 1e9
		setCol(&row, bi, gbs)
		if d.lookup {
			setCol(&hitRow, bi, 100*float64(hits.Load())/float64(max(1, asked.Load())))
		}
	}
	if d.lookup {
		// A replay appends only what its lookup missed, and concurrent
		// requests for a new prefix wait on each other's appends of the
		// same blocks: a workload figure, not the store's append rate.
		row.Metric = "append (replay: lookup, then append the misses)"
	} else {
		row.Target = ">= 0.5 GB/s durable (kvcache)"
	}
	r.rep.Rows = append(r.rep.Rows, row)
	if d.lookup {
		r.rep.Rows = append(r.rep.Rows, hitRow)
	}
	return nil
}

// backends lists kvcache first, then the Redis read modes.
func (r *runner) backends() []Backend { return append([]Backend{r.kv}, r.redis...) }

// populateBackends is how many backends need populating: Redis read modes
// share one server, so it is filled once.
func (r *runner) populateBackends() int { return min(2, len(r.backends())) }

func setCol(row *Row, backend int, v float64) {
	switch backend {
	case 0:
		row.KVCache = v
	case 1:
		row.RedisPipe = v
	case 2:
		row.RedisMGET = v
	case colGRPC:
		row.KVGRPC = v
	}
}

// colGRPC is setCol's column of the gRPC-only kvcache backend.
const colGRPC = 3

func newRow(phase, metric, unit string) Row {
	return Row{Phase: phase, Metric: metric, Unit: unit, KVCache: math.NaN(), KVGRPC: math.NaN(), RedisPipe: math.NaN(), RedisMGET: math.NaN()}
}

// lookupPhase stores a chain of LookupKeys small blocks (Lookup cost does
// not depend on block size) and times Lookup of the whole chain, all keys
// present, the worst case: rounds interleaved, samples pooled.
func (r *runner) lookupPhase(ctx context.Context) error {
	n := r.cfg.LookupKeys
	g := Geometry{Model: "kvbench/lookup", Layers: 1, KVHeads: 1, HeadDim: 8, BlockTokens: r.cfg.Geometry.BlockTokens, Codec: kvblock.Int8}
	ns, err := g.Namespace()
	if err != nil {
		return err
	}
	enc := NewEncoder(g, 3)
	keys := make([]prefix.Key, n)
	blocks := make([]client.Block, n)
	tokens := make([]uint32, g.BlockTokens)
	parent, has := ns.Root(), false
	for i := range n {
		fillTokens(tokens, 11, 0, i)
		k := prefix.Next(parent, tokens)
		b := Block{Key: k, HasParent: has, Pos: uint32(i * g.BlockTokens), Seed: uint64(i)}
		if has {
			b.Parent = parent
		}
		data, err := enc.Encode(nil, b)
		if err != nil {
			return err
		}
		keys[i], blocks[i] = k, client.Block{Key: k, Data: data}
		parent, has = k, true
	}
	bs := r.backends()[:r.populateBackends()]
	for _, b := range bs {
		for i := 0; i < n; i += 64 {
			if err := b.Put(ctx, ns, blocks[i:min(n, i+64)]); err != nil {
				return fmt.Errorf("%s: store lookup chain: %w", b.Name(), err)
			}
		}
	}
	cols := make([]int, len(bs))
	for i := range bs {
		cols[i] = i
	}
	if r.kvRPC != nil { // same nodes as kvcache: Lookup over gRPC, side by side
		bs = slices.Insert(bs, 1, r.kvRPC)
		cols = slices.Insert(cols, 1, colGRPC)
	}
	samples := make([][]time.Duration, len(bs))
	for round := range r.cfg.Rounds {
		for bi, b := range bs {
			r.p.begin(fmt.Sprintf("lookup %d keys: %s (round %d)", n, b.Name(), round+1), 0)
			deadline := time.Now().Add(r.cfg.Duration / 2)
			for time.Now().Before(deadline) {
				t0 := time.Now()
				got, err := b.Lookup(ctx, ns, keys)
				d := time.Since(t0)
				if err != nil {
					r.p.end()
					return fmt.Errorf("%s lookup: %w", b.Name(), err)
				}
				if got != n {
					r.p.end()
					return fmt.Errorf("%s lookup: %d of %d keys present", b.Name(), got, n)
				}
				samples[bi] = append(samples[bi], d)
				r.p.add(1, 0)
			}
			r.p.end()
		}
	}
	phase := fmt.Sprintf("lookup %d keys (all present), 1 caller", n)
	p50, p99 := newRow(phase, "p50", "ms"), newRow(phase, "p99", "ms")
	p50.Lower, p99.Lower = true, true
	for bi := range bs {
		ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
		setCol(&p50, cols[bi], ms(Percentile(samples[bi], 50)))
		setCol(&p99, cols[bi], ms(Percentile(samples[bi], 99)))
		r.rep.Samples[fmt.Sprintf("lookup/%s/count", bs[bi].Name())] = []float64{float64(len(samples[bi]))}
	}
	p99.Target = "<= 1 ms"
	r.rep.Rows = append(r.rep.Rows, p50, p99)
	return nil
}

// fetchPhase times warm fetches of d's requests at cfg.Concurrency,
// backends interleaved round by round.
func (r *runner) fetchPhase(ctx context.Context, d *dataset, phase string) error {
	bs := r.backends()
	cols := make([]int, len(bs))
	pids := make([]int, len(bs))
	for i := range bs {
		cols[i], pids[i] = i, r.pids[i]
	}
	if r.kvRPC != nil { // right after kvcache, so the two are measured back to back
		bs = slices.Insert(bs, 1, r.kvRPC)
		cols = slices.Insert(cols, 1, colGRPC)
		pids = slices.Insert(pids, 1, r.pids[0])
	}
	// Warm up each backend (connections, buffers, page cache).
	for _, b := range bs {
		r.p.begin(fmt.Sprintf("%s: warm up %s", phase, b.Name()), 0)
		_, err := r.fetchFor(ctx, b, d, 500*time.Millisecond, 99)
		r.p.end()
		if err != nil {
			return err
		}
	}
	gbs := make([][]float64, len(bs))
	cpus := make([][]float64, len(bs))
	for round := range r.cfg.Rounds {
		for bi, b := range bs {
			r.p.begin(fmt.Sprintf("%s c=%d: %s (round %d)", phase, r.cfg.Concurrency, b.Name(), round+1), 0)
			c0 := cpuTime(pids[bi])
			v, err := r.fetchFor(ctx, b, d, r.cfg.Duration, uint64(round))
			cpu := cpuTime(pids[bi]) - c0
			r.p.end()
			if err != nil {
				return err
			}
			gbs[bi] = append(gbs[bi], v)
			// Core-seconds per GB, client and server together.
			cpus[bi] = append(cpus[bi], cpu.Seconds()/(v*r.cfg.Duration.Seconds()))
			r.rep.Samples[fmt.Sprintf("%s/%s", phase, b.Name())] = gbs[bi]
			r.rep.Samples[fmt.Sprintf("%s/%s/cpu_s_per_gb", phase, b.Name())] = cpus[bi]
		}
	}
	ph := fmt.Sprintf("%s, c=%d", phase, r.cfg.Concurrency)
	row, tok := newRow(ph, "fetch", "GB/s"), newRow(ph, "KV tokens served", "k tokens/s")
	cpuRow := newRow(ph, "CPU per GB, client+server", "core-s/GB")
	cpuRow.Lower = true
	for bi := range bs {
		m := Median(gbs[bi])
		setCol(&row, cols[bi], m)
		setCol(&tok, cols[bi], m*1e9/d.g.TokenBytes()/1e3)
		if pids[bi] != 0 || r.cfg.NodeMode == "inproc" && (cols[bi] == 0 || cols[bi] == colGRPC) {
			setCol(&cpuRow, cols[bi], Median(cpus[bi]))
		}
	}
	if d.name == "target" {
		row.Target = ">= 2 GB/s and >= 1.5x best Redis"
	}
	r.rep.Rows = append(r.rep.Rows, row, tok, cpuRow)
	return nil
}

// fetchFor runs cfg.Concurrency fetchers for dur and returns GB/s.
func (r *runner) fetchFor(ctx context.Context, b Backend, d *dataset, dur time.Duration, seed uint64) (float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, r.cfg.Concurrency)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	deadline := t0.Add(dur)
	for w := range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var dst [][]byte
			for time.Now().Before(deadline) && fctx.Err() == nil {
				keys := d.fetches[rng.IntN(len(d.fetches))]
				n, nb, err := b.Fetch(fctx, d.ns, keys, &dst)
				if err == nil && n != len(keys) {
					err = fmt.Errorf("got %d of %d blocks", n, len(keys))
				}
				if err != nil {
					errc <- fmt.Errorf("%s fetch: %w", b.Name(), err)
					cancel()
					return
				}
				total.Add(nb)
				r.p.add(1, nb)
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	return float64(total.Load()) / el.Seconds() / 1e9, nil
}

// decodePhase measures Decode of int8 and int4 blocks of the workload
// geometry, in encoded bytes per second, to compare with what a fetch
// delivers: on one core, and on all cores (GOMAXPROCS goroutines, each
// decoding its own copy of the block), the parallelism a fetch has.
func (r *runner) decodePhase() {
	for _, c := range []kvblock.Codec{kvblock.Int8, kvblock.Int4} {
		g := r.cfg.Geometry
		g.Codec = c
		enc := NewEncoder(g, 5)
		// A block past the sink tokens: the common case.
		blk, err := enc.Encode(nil, Block{Seed: 1, Pos: uint32(4 * g.BlockTokens), HasParent: true, Parent: prefix.Key{1}})
		if err != nil {
			continue
		}
		all := runtime.GOMAXPROCS(0)
		for _, procs := range []int{1, all} {
			cores := "1 core"
			if procs > 1 {
				cores = fmt.Sprintf("all cores (%d)", procs)
			}
			r.p.begin(fmt.Sprintf("decode %s, %s", c, cores), 0)
			var total atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			for range procs {
				own := bytes.Clone(blk)
				wg.Add(1)
				go func() {
					defer wg.Done()
					var kv kvblock.KV
					n := int64(0)
					for time.Since(t0) < r.cfg.Duration/2 {
						if _, err := kvblock.Decode(own, &kv); err != nil {
							break
						}
						n++
						r.p.add(1, int64(len(own)))
					}
					total.Add(n)
				}()
			}
			wg.Wait()
			el := time.Since(t0)
			r.p.end()
			n := float64(total.Load())
			row := newRow(fmt.Sprintf("decode %s to float32, %s (%s blocks)", c, cores, fmtBytes(float64(len(blk)))), "decode", "GB/s")
			if procs == all {
				// Judged: a fetch has every core too. The 1-core row is
				// shown for reference.
				row.Metric = "decode, all cores"
				row.Target = "never the bottleneck of a fetch"
			}
			row.KVCache = n * float64(len(blk)) / el.Seconds() / 1e9
			tok := newRow(row.Phase, "KV tokens decoded", "k tokens/s")
			tok.KVCache = n * float64(g.BlockTokens) / el.Seconds() / 1e3
			r.rep.Rows = append(r.rep.Rows, row, tok)
			if all == 1 {
				break // one core is all cores
			}
		}
	}
}

// judge fills Met for rows with targets.
func (r *runner) judge() {
	var fetchGBs float64 = math.NaN()
	for i := range r.rep.Rows {
		row := &r.rep.Rows[i]
		var ok bool
		switch {
		case row.Target == "":
			continue
		case row.Metric == "append":
			ok = row.KVCache >= 0.5 && !r.cfg.NoSync
		case row.Metric == "p99":
			ok = row.KVCache <= 1
		case row.Metric == "fetch":
			best := bestRedis(*row)
			ok = row.KVCache >= 2 && (math.IsNaN(best) || row.KVCache >= 1.5*best)
			fetchGBs = row.KVCache
		case row.Metric == "decode, all cores":
			if math.IsNaN(fetchGBs) {
				continue
			}
			row.Target = fmt.Sprintf(">= fetch rate (%.2f GB/s), all cores", fetchGBs)
			ok = row.KVCache >= fetchGBs
		}
		row.Met = &ok
	}
}

func bestRedis(row Row) float64 {
	vals := slices.DeleteFunc([]float64{row.RedisPipe, row.RedisMGET}, math.IsNaN)
	if len(vals) == 0 {
		return math.NaN()
	}
	if row.Lower {
		return slices.Min(vals)
	}
	return slices.Max(vals)
}
