package plots

import "strconv"

// The four charts of the guide (docs/kv-cache.md). Their file names are
// what `make demo` and `make bench` print and what the guide embeds.

// File names of the charts.
const (
	FileTTFT     = "ttft-by-prefix"
	FileHitRatio = "hit-ratio-timeline"
	FileFetch    = "fetch-by-block-size"
	FileFidelity = "codec-fidelity"
)

// Series names of the TTFT and hit-ratio charts.
const (
	SeriesMiss       = "miss: prefill the whole prompt"
	SeriesHit        = "hit: fetch the prefix, prefill the rest"
	SeriesCumulative = "cumulative"
	SeriesPerRequest = "each request"
)

// TTFT is time to first token against the shared prefix's length, for
// requests that missed and requests that hit (x: tokens, y: ms).
func TTFT(misses, hits []Point) Chart {
	return Chart{
		File: FileTTFT, Title: "TTFT, cache hit vs miss", LogX: true, LegendLeft: true,
		XLabel: "prompt tokens (shared prefix + question; log scale)", YLabel: "time to first token (ms)",
		Series: []Series{
			{Name: SeriesMiss, Points: misses, Line: true},
			{Name: SeriesHit, Points: hits, Line: true},
		},
	}
}

// HitRatio is the share of prompt tokens served from the cache over the
// run: after each request (cumulative) and of each request alone
// (x: seconds since the first request, y: percent).
func HitRatio(cumulative, perRequest []Point) Chart {
	return Chart{
		File: FileHitRatio, Title: "Cache hit ratio over the demo",
		XLabel: "time since the first request (s)", YLabel: "prompt tokens from the cache (%)",
		YMin: 0, YMax: 100, LegendBottom: true,
		Series: []Series{
			{Name: SeriesCumulative, Points: cumulative, Line: true},
			{Name: SeriesPerRequest, Points: perRequest},
		},
	}
}

// Fetch is fetch throughput against block size, one series per backend
// (x: bytes, y: GB/s).
func Fetch(backends ...Series) Chart {
	for i := range backends {
		backends[i].Line = true
	}
	return Chart{
		File: FileFetch, Title: "Fetch throughput by block size", LogX: true, XTick: sizeLabel,
		XLabel: "block size (log scale)", YLabel: "fetch (GB/s)",
		Series: backends,
	}
}

// CodecFidelity is one codec's size and fidelity.
type CodecFidelity struct {
	Codec         string
	BytesPerToken float64
	// Fidelity measures, 1 = exact; NaN where not measured.
	AttentionCosine, LogitCosine, GreedyAgreement float64
}

// Series names of the fidelity chart.
const (
	SeriesAttention = "attention output cosine"
	SeriesLogit     = "logit cosine"
	SeriesGreedy    = "greedy agreement"
)

// Fidelity is each codec's fidelity against its bytes per token, one
// series per measure, each point labelled with its codec.
func Fidelity(codecs []CodecFidelity) Chart {
	pick := func(name string, f func(CodecFidelity) float64) Series {
		s := Series{Name: name}
		for _, c := range codecs {
			if v := f(c); finite(v) {
				s.Points = append(s.Points, Point{X: c.BytesPerToken / 1024, Y: v})
				s.Labels = append(s.Labels, c.Codec)
			}
		}
		return s
	}
	var series []Series
	for _, s := range []Series{
		pick(SeriesAttention, func(c CodecFidelity) float64 { return c.AttentionCosine }),
		pick(SeriesLogit, func(c CodecFidelity) float64 { return c.LogitCosine }),
		pick(SeriesGreedy, func(c CodecFidelity) float64 { return c.GreedyAgreement }),
	} {
		if len(s.Points) == 0 {
			continue
		}
		if len(series) > 0 {
			s.Labels = nil // codec labels on the first series are enough
		}
		series = append(series, s)
	}
	return Chart{
		File: FileFidelity, Title: "Bytes per token vs fidelity, by codec", LegendBottom: true,
		XLabel: "KV bytes per token (KiB)", YLabel: "fidelity (1 = same as f16)",
		Series: series,
	}
}

// sizeLabel writes a block size as KiB or MiB.
func sizeLabel(b float64) string {
	switch {
	case b >= 1<<20:
		return strconv.FormatFloat(b/(1<<20), 'g', 3, 64) + " MiB"
	case b >= 1<<10:
		return strconv.FormatFloat(b/(1<<10), 'g', 3, 64) + " KiB"
	}
	return strconv.FormatFloat(b, 'g', 3, 64) + " B"
}
