package kvbench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
)

// MarshalJSON writes unmeasured (NaN) values as null.
func (r Row) MarshalJSON() ([]byte, error) {
	type plain Row
	num := func(v float64) *float64 {
		if math.IsNaN(v) {
			return nil
		}
		return &v
	}
	return json.Marshal(struct {
		plain
		KVCache   *float64 `json:"kvcache"`
		KVGRPC    *float64 `json:"kvcache_grpc"`
		RedisPipe *float64 `json:"redis_pipelined"`
		RedisMGET *float64 `json:"redis_mget"`
		Ratio     *float64 `json:"kvcache_vs_best_redis,omitempty"`
	}{plain(r), num(r.KVCache), num(r.KVGRPC), num(r.RedisPipe), num(r.RedisMGET), num(r.Ratio())})
}

// Ratio is how many times better kvcache is than the better Redis mode:
// throughput over throughput, or latency inverted. NaN when either side is
// missing.
func (r Row) Ratio() float64 {
	best := bestRedis(r)
	if math.IsNaN(best) || math.IsNaN(r.KVCache) || best == 0 || r.KVCache == 0 {
		return math.NaN()
	}
	if r.Lower {
		return best / r.KVCache
	}
	return r.KVCache / best
}

// JSON writes the report as indented JSON.
func (rep *Report) JSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// Table returns the side-by-side table.
func (rep *Report) Table() *Table {
	t := &Table{Header: []string{"phase", "metric", "kvcache", "kvcache gRPC only", "redis pipelined", "redis MGET", "kvcache vs best redis", "target", "met"}}
	for _, r := range rep.Rows {
		met := ""
		if r.Met != nil {
			met = "yes"
			if !*r.Met {
				met = "**no**"
			}
		}
		ratio := ""
		if x := r.Ratio(); !math.IsNaN(x) {
			ratio = fmt.Sprintf("%.2fx", x)
		}
		t.Rows = append(t.Rows, []string{r.Phase, r.Metric, fmtVal(r.KVCache, r.Unit), fmtVal(r.KVGRPC, r.Unit), fmtVal(r.RedisPipe, r.Unit), fmtVal(r.RedisMGET, r.Unit), ratio, r.Target, met})
	}
	return t
}

// Markdown writes the setup lines and the table.
func (rep *Report) Markdown(w io.Writer) error {
	fmt.Fprintf(w, "- geometry: %s\n- workload: %s\n", rep.Geometry, rep.Workload)
	if rep.Target != "" {
		fmt.Fprintf(w, "- target dataset: %s\n", rep.Target)
	}
	fmt.Fprintf(w, "- setup: %s\n", rep.Setup)
	fmt.Fprintln(w, "- redis pipelined = one pipeline per request of SET / EXISTS / GET per block; redis MGET = one MGET per request. Redis runs without persistence; kvcache appends are acknowledged after fsync.")
	fmt.Fprintln(w)
	return rep.Table().Render(w)
}

func fmtVal(v float64, unit string) string {
	if math.IsNaN(v) {
		return "—"
	}
	prec := 2
	switch unit {
	case "ms":
		prec = 3
	case "%", "k tokens/s":
		prec = 1
	case "B":
		prec = 0
	case "cos":
		return strconv.FormatFloat(v, 'f', 6, 64)
	case "x":
		return strconv.FormatFloat(v, 'f', 2, 64) + "x"
	}
	return strconv.FormatFloat(v, 'f', prec, 64) + " " + unit
}
