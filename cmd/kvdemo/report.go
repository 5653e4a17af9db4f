package main

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// timings mirrors the worker's timings object.
type timings struct {
	LookupMS      float64 `json:"lookup_ms"`
	FetchMS       float64 `json:"fetch_ms"`
	FetchedBlocks int     `json:"fetched_blocks"`
	FetchedBytes  int64   `json:"fetched_bytes"`
	HotTokens     int     `json:"hot_cache_tokens"` // cached tokens from the worker's own hot tier, not fetched
	PrefillMS     float64 `json:"prefill_ms"`
	PrefillTokens int     `json:"prefill_tokens"`
	TTFTMS        float64 `json:"ttft_ms"`
}

// row is one finished request.
type row struct {
	N            int
	Group, Label string
	Worker       string
	PrefixFrom   string // worker that computed the reused prefix; "" for a miss
	PromptTokens int
	CachedTokens int
	Timings      timings
	Done         time.Duration // when it finished, since the first request started
}

func (r row) hit() bool { return r.CachedTokens > 0 }

// summary aggregates rows.
type summary struct {
	Requests, Hits, CrossHits  int
	PromptTokens, CachedTokens int
	HotTokens                  int // of CachedTokens, from the workers' hot tiers
	TTFTHitP50, TTFTMissP50    float64
	FetchedBytes, F16Bytes     int64
	PrefillMSPerToken          float64 // computed tokens, all requests
	FetchMSPerToken            float64 // reused tokens, hits
}

// HitRatio is the share of prompt tokens served from the cache.
func (s summary) HitRatio() float64 { return ratio(float64(s.CachedTokens), float64(s.PromptTokens)) }

// Compression is f16 KV bytes of the tokens fetched from the cluster over
// the bytes moved (hot-tier tokens moved nothing).
func (s summary) Compression() float64 { return ratio(float64(s.F16Bytes), float64(s.FetchedBytes)) }

// TTFTSpeedup is median miss TTFT over median hit TTFT.
func (s summary) TTFTSpeedup() float64 { return ratio(s.TTFTMissP50, s.TTFTHitP50) }

// ReuseSpeedup is how much cheaper a reused token is than a computed one.
func (s summary) ReuseSpeedup() float64 { return ratio(s.PrefillMSPerToken, s.FetchMSPerToken) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// summarize computes the summary; kvBytesPerToken is the model's f16 KV
// size per token.
func summarize(rows []row, kvBytesPerToken int) summary {
	var (
		s                   summary
		hitTTFT, missTTFT   []float64
		prefillMS, fetchMS  float64
		prefillToks, reused int
	)
	for _, r := range rows {
		s.Requests++
		s.PromptTokens += r.PromptTokens
		s.CachedTokens += r.CachedTokens
		s.HotTokens += r.Timings.HotTokens
		s.FetchedBytes += r.Timings.FetchedBytes
		prefillMS += r.Timings.PrefillMS
		prefillToks += r.Timings.PrefillTokens
		if r.hit() {
			s.Hits++
			if r.PrefixFrom != "" && r.PrefixFrom != r.Worker {
				s.CrossHits++
			}
			hitTTFT = append(hitTTFT, r.Timings.TTFTMS)
			fetchMS += r.Timings.FetchMS
			reused += r.CachedTokens - r.Timings.HotTokens
		} else {
			missTTFT = append(missTTFT, r.Timings.TTFTMS)
		}
	}
	s.F16Bytes = int64(s.CachedTokens-s.HotTokens) * int64(kvBytesPerToken)
	s.TTFTHitP50, s.TTFTMissP50 = median(hitTTFT), median(missTTFT)
	s.PrefillMSPerToken = ratio(prefillMS, float64(prefillToks))
	s.FetchMSPerToken = ratio(fetchMS, float64(reused))
	return s
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	x = append([]float64(nil), x...)
	sort.Float64s(x)
	if len(x)%2 == 1 {
		return x[len(x)/2]
	}
	return (x[len(x)/2-1] + x[len(x)/2]) / 2
}

// table prints rows as they finish, in fixed-width columns so that each
// line can be printed (as progress) before the next request runs.
type table struct{ w io.Writer }

const rowFormat = "%3v  %-6v %-11v %-9v %7v %7v  %-17v %8v %9v %7v %8v\n"

func newTable(w io.Writer) *table {
	fmt.Fprintf(w, rowFormat, "#", "group", "request", "worker", "prompt", "cached", "prefix from", "computed", "fetched", "fetch", "TTFT")
	fmt.Fprintf(w, rowFormat, "", "", "", "", "tokens", "tokens", "", "tokens", "KiB", "ms", "ms")
	return &table{w: w}
}

func (t *table) add(r row) {
	from := "-"
	if r.hit() {
		from = r.PrefixFrom
		if r.PrefixFrom != r.Worker {
			from += " (other)"
		}
	}
	fmt.Fprintf(t.w, rowFormat, r.N, r.Group, r.Label, r.Worker, r.PromptTokens, r.CachedTokens, from,
		r.Timings.PrefillTokens, fmt.Sprintf("%.1f", float64(r.Timings.FetchedBytes)/1024),
		fmt.Sprintf("%.1f", r.Timings.FetchMS), fmt.Sprintf("%.0f", r.Timings.TTFTMS))
}

func printSummary(w io.Writer, s summary, codec string) {
	fmt.Fprintf(w, "\nrequests            %d (%d hits, %d of them on the worker that did not compute the prefix)\n", s.Requests, s.Hits, s.CrossHits)
	fmt.Fprintf(w, "hit ratio (tokens)  %.1f%% (%d of %d prompt tokens came from the cache, %d of them from a worker's hot tier)\n", 100*s.HitRatio(), s.CachedTokens, s.PromptTokens, s.HotTokens)
	fmt.Fprintf(w, "TTFT p50            hits %.0f ms, misses %.0f ms: %.1fx faster\n", s.TTFTHitP50, s.TTFTMissP50, s.TTFTSpeedup())
	fmt.Fprintf(w, "per fetched token   prefill %.3f ms vs fetch+decode %.3f ms: %.0fx cheaper\n", s.PrefillMSPerToken, s.FetchMSPerToken, s.ReuseSpeedup())
	fmt.Fprintf(w, "bytes from cache    %.2f MiB of %s KV (f16 would be %.2f MiB: %.2fx compression)\n",
		float64(s.FetchedBytes)/(1<<20), codec, float64(s.F16Bytes)/(1<<20), s.Compression())
}
