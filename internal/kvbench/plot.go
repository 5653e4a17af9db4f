package kvbench

import (
	"cmp"
	"math"
	"slices"

	"github.com/kvcache/kvcache/internal/plots"
)

// Charts returns the charts of the report: fetch throughput by block
// size (when a uniform dataset was fetched) and bytes per token against
// fidelity per codec (when the fidelity phase ran).
func (rep *Report) Charts() []plots.Chart {
	var charts []plots.Chart
	if len(rep.BlockFetch) > 0 {
		bf := slices.SortedFunc(slices.Values(rep.BlockFetch), func(a, b BlockFetch) int { return cmp.Compare(a.BlockBytes, b.BlockBytes) })
		var series []plots.Series
		for _, col := range []struct {
			name string
			v    func(Row) float64
		}{
			{"kvcache", func(r Row) float64 { return r.KVCache }},
			{"kvcache gRPC only", func(r Row) float64 { return r.KVGRPC }},
			{"redis pipelined", func(r Row) float64 { return r.RedisPipe }},
			{"redis MGET", func(r Row) float64 { return r.RedisMGET }},
		} {
			s := plots.Series{Name: col.name}
			for _, b := range bf {
				if v := col.v(b.Fetch); !math.IsNaN(v) {
					s.Points = append(s.Points, plots.Point{X: float64(b.BlockBytes), Y: v})
				}
			}
			if len(s.Points) > 0 {
				series = append(series, s)
			}
		}
		if len(series) > 0 {
			charts = append(charts, plots.Fetch(series...))
		}
	}
	if len(rep.Codecs) > 0 {
		var cs []plots.CodecFidelity
		for _, c := range rep.Codecs {
			// Logit cosine and greedy agreement need a model: pkg/worker's
			// TestLossyCodecQuality measures them.
			cs = append(cs, plots.CodecFidelity{Codec: c.Codec, BytesPerToken: c.BytesPerToken,
				AttentionCosine: c.AttentionCosine, LogitCosine: math.NaN(), GreedyAgreement: math.NaN()})
		}
		charts = append(charts, plots.Fidelity(cs))
	}
	return charts
}

// WritePlots writes the report's charts into dir and returns the paths.
func (rep *Report) WritePlots(dir string) ([]string, error) {
	return plots.WriteAll(dir, rep.Charts()...)
}
