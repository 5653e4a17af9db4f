package kvbench

import (
	"io"
	"time"
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
	// BlockSizes adds uniform datasets of these block sizes (each of
	// TargetBytes/4), fetched like the target: the fetch-by-block-size
	// rows and chart. None by default.
	BlockSizes []int

	Fidelity bool   // bytes per token and attention fidelity per codec (DefaultConfig: true)
	PlotDir  string // Main writes the charts here ("" = none)

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
		Decode: true, RunWorkload: true, Lookup: true, GRPCRow: true, Fidelity: true,
	}
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
