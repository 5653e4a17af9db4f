package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/plots"
)

func TestSweepPairsMissThenHit(t *testing.T) {
	steps := sweepSteps([]int{64, 128})
	if len(steps) != 4 || steps[0].Messages[0] != steps[1].Messages[0] || steps[1].Messages[0] == steps[2].Messages[0] {
		t.Fatalf("each length must be one prompt sent twice, lengths apart: %+v", steps)
	}
	rows := []row{
		{PromptTokens: 80, Timings: timings{TTFTMS: 900}},
		{PromptTokens: 80, CachedTokens: 64, Timings: timings{TTFTMS: 60}},
		{PromptTokens: 144, Timings: timings{TTFTMS: 1800}},
		{PromptTokens: 144, Timings: timings{TTFTMS: 1700}}, // the "hit" missed: not a point
	}
	got := sweepPoints(rows)
	want := []sweepPoint{{PromptTokens: 80, CachedTokens: 64, MissTTFTMS: 900, HitTTFTMS: 60}}
	if !slices.Equal(got, want) {
		t.Errorf("points %+v, want %+v", got, want)
	}
}

func TestParseSweep(t *testing.T) {
	if got, err := parseSweep(" 64, 128,,512 "); err != nil || !slices.Equal(got, []int{64, 128, 512}) {
		t.Errorf("parseSweep = %v, %v", got, err)
	}
	if got, err := parseSweep(""); err != nil || len(got) != 0 {
		t.Errorf("empty sweep = %v, %v; want none", got, err)
	}
	for _, bad := range []string{"abc", "8", "-64", "1000000"} {
		if _, err := parseSweep(bad); err == nil {
			t.Errorf("parseSweep(%q) accepted", bad)
		}
	}
}

func TestHitRatioChartIsCumulative(t *testing.T) {
	rows := []row{
		{PromptTokens: 100, Done: time.Second},
		{PromptTokens: 100, CachedTokens: 100, Done: 2 * time.Second},
		{PromptTokens: 200, CachedTokens: 100, Done: 4 * time.Second},
	}
	c := hitRatioChart(rows)
	cum, each := c.Series[0], c.Series[1]
	if cum.Name != plots.SeriesCumulative || each.Name != plots.SeriesPerRequest {
		t.Fatalf("series %q, %q", cum.Name, each.Name)
	}
	if want := []plots.Point{{X: 1, Y: 0}, {X: 2, Y: 50}, {X: 4, Y: 50}}; !slices.Equal(cum.Points, want) {
		t.Errorf("cumulative %v, want %v", cum.Points, want)
	}
	if want := []plots.Point{{X: 1, Y: 0}, {X: 2, Y: 100}, {X: 4, Y: 50}}; !slices.Equal(each.Points, want) {
		t.Errorf("per request %v, want %v", each.Points, want)
	}
}

func TestWritePlotsNamesItsFiles(t *testing.T) {
	dir := t.TempDir()
	rows := []row{{PromptTokens: 100, Done: time.Second}, {PromptTokens: 100, CachedTokens: 96, Done: 2 * time.Second}}
	paths, err := writePlots(dir, rows, []sweepPoint{{PromptTokens: 80, CachedTokens: 64, MissTTFTMS: 900, HitTTFTMS: 60}})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range []string{plots.FileHitRatio, plots.FileTTFT} {
		want = append(want, filepath.Join(dir, f+".png"), filepath.Join(dir, f+".svg"))
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("paths %v, want %v", paths, want)
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v", p, err)
		}
	}
}
