package main

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/model"
)

func TestSummarize(t *testing.T) {
	rows := []row{
		{N: 1, Worker: "worker-1", PromptTokens: 1000, Timings: timings{PrefillTokens: 1000, PrefillMS: 2000, TTFTMS: 2010}},
		{N: 2, Worker: "worker-2", PrefixFrom: "worker-1", PromptTokens: 1010, CachedTokens: 992,
			Timings: timings{PrefillTokens: 18, PrefillMS: 36, FetchMS: 9.92, FetchedBytes: 992 * 1024, TTFTMS: 50}},
		{N: 3, Worker: "worker-1", PrefixFrom: "worker-1", PromptTokens: 1020, CachedTokens: 1008,
			Timings: timings{PrefillTokens: 12, PrefillMS: 24, FetchMS: 10.08, FetchedBytes: 1008 * 1024, TTFTMS: 40}},
		{N: 4, Worker: "worker-2", PromptTokens: 500, Timings: timings{PrefillTokens: 500, PrefillMS: 1000, TTFTMS: 1010}},
		// A repeat served by the worker's hot tier moves no bytes: it
		// counts as a hit, not in the compression or the fetch cost.
		{N: 5, Worker: "worker-1", PrefixFrom: "worker-1", PromptTokens: 1000, CachedTokens: 992,
			Timings: timings{PrefillTokens: 8, PrefillMS: 16, HotTokens: 992, TTFTMS: 20}},
	}
	s := summarize(rows, 2048)
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if s.Requests != 5 || s.Hits != 3 || s.CrossHits != 1 || s.HotTokens != 992 {
		t.Errorf("requests/hits/cross/hot = %d/%d/%d/%d, want 5/3/1/992", s.Requests, s.Hits, s.CrossHits, s.HotTokens)
	}
	near("hit ratio", s.HitRatio(), 2992.0/4530)
	near("hit p50", s.TTFTHitP50, 40)
	near("miss p50", s.TTFTMissP50, 1510)
	near("ttft speedup", s.TTFTSpeedup(), 1510.0/40)
	near("compression", s.Compression(), 2)
	near("prefill ms/token", s.PrefillMSPerToken, 3076.0/1538)
	near("fetch ms/token", s.FetchMSPerToken, 0.01)
	near("reuse speedup", s.ReuseSpeedup(), 200)

	var out bytes.Buffer
	tb := newTable(&out)
	for _, r := range rows {
		tb.add(r)
	}
	printSummary(&out, s, "int8")
	for _, want := range []string{"worker-1 (other)", "2.00x compression", "1 of them on the worker that did not compute", "992 of them from a worker's hot tier"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestMedianAndEmpty(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}}
	for _, tt := range tests {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if s := summarize(nil, 1); s.HitRatio() != 0 || s.Compression() != 0 || s.TTFTSpeedup() != 0 {
		t.Errorf("empty summary has non-zero ratios: %+v", s)
	}
}

func TestWorkload(t *testing.T) {
	steps := workload(1000, 1000)
	if got := len(model.WordTokenizer().Encode(text("x", 1000))); got < 990 || got > 1000 {
		t.Errorf("text of 1000 tokens has %d", got)
	}
	groups := map[string]int{}
	for i, s := range steps {
		groups[s.Group]++
		if i < 4 && groups[s.Group] == 2 && i%2 == 0 {
			t.Errorf("step %d: the second request of %s runs on the same worker as the first", i, s.Group)
		}
	}
	if groups["system"] < 4 || groups["doc"] < 3 || groups["chat"] < 3 {
		t.Errorf("workload mix %v", groups)
	}
}
