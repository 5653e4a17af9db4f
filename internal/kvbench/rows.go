package kvbench

import (
	"fmt"
	"math"
	"slices"
)

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
	// BlockFetch is the fetch row of each uniform dataset, by block size.
	BlockFetch []BlockFetch `json:"fetch_by_block_size,omitempty"`
	// Codecs is each codec's bytes per token and fidelity.
	Codecs []CodecFidelity `json:"codecs,omitempty"`
}

// CodecFidelity is one codec's KV bytes per token in the run's geometry
// and the attention fidelity of its decoded KV (1 = exact).
type CodecFidelity struct {
	Codec           string  `json:"codec"`
	BytesPerToken   float64 `json:"bytes_per_token"`
	AttentionCosine float64 `json:"attention_cosine"`
}

// BlockFetch is the fetch throughput of every backend at one block size.
type BlockFetch struct {
	BlockBytes int `json:"block_bytes"`
	Fetch      Row `json:"fetch"`
}

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
		case row.Metric == cpuRatioMetric:
			ok = row.KVCache >= 1
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
