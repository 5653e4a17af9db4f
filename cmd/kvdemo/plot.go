package main

import (
	"github.com/kvcache/kvcache/internal/plots"
)

// writePlots draws the TTFT sweep and the workload's hit ratio over time
// into dir and returns the files written.
func writePlots(dir string, rows []row, swept []sweepPoint) ([]string, error) {
	charts := []plots.Chart{hitRatioChart(rows)}
	if len(swept) > 0 {
		charts = append(charts, ttftChart(swept))
	}
	return plots.WriteAll(dir, charts...)
}

func ttftChart(pts []sweepPoint) plots.Chart {
	var miss, hit []plots.Point
	for _, p := range pts {
		x := float64(p.PromptTokens)
		miss = append(miss, plots.Point{X: x, Y: p.MissTTFTMS})
		hit = append(hit, plots.Point{X: x, Y: p.HitTTFTMS})
	}
	return plots.TTFT(miss, hit)
}

// hitRatioChart is the share of prompt tokens served from the cache,
// cumulative and per request, at the time each request finished.
func hitRatioChart(rows []row) plots.Chart {
	var cum, each []plots.Point
	var cached, prompt int
	for _, r := range rows {
		cached += r.CachedTokens
		prompt += r.PromptTokens
		x := r.Done.Seconds()
		cum = append(cum, plots.Point{X: x, Y: 100 * ratio(float64(cached), float64(prompt))})
		each = append(each, plots.Point{X: x, Y: 100 * ratio(float64(r.CachedTokens), float64(r.PromptTokens))})
	}
	return plots.HitRatio(cum, each)
}
