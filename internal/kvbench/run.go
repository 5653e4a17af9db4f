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
//
// One file per phase: config.go (Config and its defaults), run.go (setup
// of the backends and the order of the phases), dataset.go (the blocks
// and their encoding), populate.go, lookup.go, fetch.go, decode.go, and
// rows.go (report rows and the judgement of their targets).
package kvbench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"
)

// runner is the state of one Run shared by its phases.
type runner struct {
	cfg   Config
	p     *progress
	kv    Backend
	kvRPC Backend   // kvcache over gRPC only (GRPCRow): fetch and lookup phases
	redis []Backend // pipelined, MGET (sharing one server)
	rep   *Report
	tmp   string
	pids  []int // server process of each backend (0: none, or this process)
	// targetFetchCPU is the target dataset's kvcache fetch CPU per GB
	// (client and server), for the decode rows; 0 if not measured.
	targetFetchCPU float64
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
	// The target dataset first (judged), then one per extra block size.
	var uniform []*dataset
	sizes, totals := []int{}, []int64{}
	if cfg.TargetBlockBytes > 0 && cfg.TargetBytes > 0 {
		sizes, totals = append(sizes, cfg.TargetBlockBytes), append(totals, cfg.TargetBytes)
	}
	for _, b := range cfg.BlockSizes {
		sizes, totals = append(sizes, b), append(totals, max(cfg.TargetBytes/4, int64(b)*int64(cfg.TargetChainLen)))
	}
	for i, size := range sizes {
		name := "target"
		if i > 0 || cfg.TargetBlockBytes <= 0 || cfg.TargetBytes <= 0 {
			name = fmt.Sprintf("uniform-%d", size)
		}
		d, err := r.uniformDataset(name, size, totals[i])
		if err != nil {
			return err
		}
		if name == "target" {
			r.rep.Target = d.g.String()
		}
		if err := r.encode(ctx, d); err != nil {
			return err
		}
		if err := r.populate(ctx, d, fmt.Sprintf("append %s blocks", fmtBytes(float64(d.g.BlockBytes())))); err != nil {
			return err
		}
		d.data = nil
		uniform = append(uniform, d)
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
		if _, err := r.fetchPhase(ctx, main, "fetch workload", nil); err != nil {
			return err
		}
	}
	var dec *decodeBench
	if cfg.Decode {
		dec = r.newDecodeBench()
	}
	for _, d := range uniform {
		var after func(float64)
		if dec != nil && d.name == "target" {
			// Decode rounds interleaved with the target's fetch rounds.
			after = func(gbs float64) { r.decodeRound(dec, gbs) }
		}
		row, err := r.fetchPhase(ctx, d, fmt.Sprintf("fetch %s blocks", fmtBytes(float64(d.g.BlockBytes()))), after)
		if err != nil {
			return err
		}
		r.rep.BlockFetch = append(r.rep.BlockFetch, BlockFetch{BlockBytes: d.g.BlockBytes(), Fetch: row})
	}
	if dec != nil {
		r.decodeRows(dec)
	}
	if cfg.Fidelity {
		if err := r.fidelityPhase(); err != nil {
			return err
		}
	}
	r.judge()
	return nil
}

// backends lists kvcache first, then the Redis read modes.
func (r *runner) backends() []Backend { return append([]Backend{r.kv}, r.redis...) }

// populateBackends is how many backends need populating: Redis read modes
// share one server, so it is filled once.
func (r *runner) populateBackends() int { return min(2, len(r.backends())) }
