package enginebench

// The time-to-first-token comparison of issue 13: llama-server's
// in-process prompt cache against kvcache's workers on the same F16 GGUF
// and the same prompt of token ids. Every system runs as its own process
// on loopback and is timed the same way, by the client's wall clock from
// sending the request to the whole (one-token) answer; the servers' own
// timings are reported beside it. Rounds alternate between the systems,
// each round with a new prompt, and the table reports medians.
//
// Per round:
//   - llama-server, prompt P twice with cache_prompt: the first request
//     computes P, the second re-evaluates one token from its slot's cache;
//   - kvcache worker A computes P (a miss) and stores its blocks on the
//     cache node; once they are stored, worker B (which never saw P) asks
//     for P: a remote full hit (lookup, fetch of every block from the node,
//     import, one token prefilled, each block also kept in B's hot tier);
//     B asks again: a hit in its in-process hot tier; worker C, whose tier
//     is off (--hot-cache-bytes 0), asks too: the remote hit alone.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvcache/kvcache/internal/childproc"
)

// ttftSample is one request as the client saw it, with what the server
// reported.
type ttftSample struct {
	WallMS     float64 // client: request sent to answer read
	ServerMS   float64 // the server's TTFT (kvcache ttft_ms; llama-server prompt_ms+predicted_ms)
	Computed   int     // prompt tokens the server computed
	Cached     int     // prompt tokens it took from a cache
	LookupMS   float64 // kvcache only
	FetchMS    float64 // kvcache: fetch, decode and import
	ImportMS   float64 // kvcache: the decode and import part of FetchMS
	FetchedMB  float64 // kvcache: encoded MB fetched
	HotMS      float64 // kvcache: hot-tier lookup and import
	PrefillMS  float64 // kvcache prefill; llama-server prompt_ms
	Fetched    int     // kvcache: blocks fetched from the cluster
	HotBlocks  int     // kvcache: blocks from the hot tier
	HotCached  int     // kvcache: tokens from the hot tier
	PromptToks int     // prompt length as the server counted it
}

// ttftRows are the table's rows, in order.
var ttftRows = []struct{ key, label string }{
	{"llama-first", "llama-server, first request (computes the prompt)"},
	{"llama-cached", "llama-server, repeated (in-process prompt cache)"},
	{"kv-miss", "kvcache worker A, miss (computes the prompt)"},
	{"kv-remote", "kvcache worker B, remote full hit (fetch from the cache node)"},
	{"kv-hot", "kvcache worker B again, hot-tier hit (in-process)"},
	{"kv-remote-notier", "kvcache worker C (hot tier off), remote full hit"},
}

type ttftResults map[string][]ttftSample

func (r ttftResults) median(key string, f func(ttftSample) float64) float64 {
	var v []float64
	for _, s := range r[key] {
		v = append(v, f(s))
	}
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 0 {
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	return v[len(v)/2]
}

// llamaCompletion is what the comparison reads of a llama-server
// /completion answer.
type llamaCompletion struct {
	TokensEvaluated int `json:"tokens_evaluated"`
	Timings         struct {
		PromptN     int     `json:"prompt_n"`
		PromptMS    float64 `json:"prompt_ms"`
		PredictedMS float64 `json:"predicted_ms"`
	} `json:"timings"`
}

func parseLlamaCompletion(body []byte, wallMS float64) (ttftSample, error) {
	var c llamaCompletion
	if err := json.Unmarshal(body, &c); err != nil {
		return ttftSample{}, fmt.Errorf("llama-server answer: %w", err)
	}
	if c.Timings.PromptN == 0 && c.TokensEvaluated == 0 {
		return ttftSample{}, fmt.Errorf("llama-server answer without timings: %.200s", body)
	}
	return ttftSample{
		WallMS: wallMS, ServerMS: c.Timings.PromptMS + c.Timings.PredictedMS, PrefillMS: c.Timings.PromptMS,
		Computed: c.Timings.PromptN, Cached: c.TokensEvaluated - c.Timings.PromptN, PromptToks: c.TokensEvaluated,
	}, nil
}

// workerCompletion is what the comparison reads of a worker's
// /v1/completions answer.
type workerCompletion struct {
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Timings *struct {
		LookupMS      float64 `json:"lookup_ms"`
		FetchMS       float64 `json:"fetch_ms"`
		ImportMS      float64 `json:"import_ms"`
		FetchedBlocks int     `json:"fetched_blocks"`
		FetchedBytes  int     `json:"fetched_bytes"`
		HotMS         float64 `json:"hot_cache_ms"`
		HotBlocks     int     `json:"hot_cache_blocks"`
		HotTokens     int     `json:"hot_cache_tokens"`
		PrefillMS     float64 `json:"prefill_ms"`
		PrefillTokens int     `json:"prefill_tokens"`
		TTFTMS        float64 `json:"ttft_ms"`
	} `json:"timings"`
}

func parseWorkerCompletion(body []byte, wallMS float64) (ttftSample, error) {
	var c workerCompletion
	if err := json.Unmarshal(body, &c); err != nil {
		return ttftSample{}, fmt.Errorf("worker answer: %w", err)
	}
	t := c.Timings
	if t == nil {
		return ttftSample{}, fmt.Errorf("worker answer without timings: %.200s", body)
	}
	return ttftSample{
		WallMS: wallMS, ServerMS: t.TTFTMS, Computed: t.PrefillTokens, Cached: c.Usage.PromptTokensDetails.CachedTokens,
		LookupMS: t.LookupMS, FetchMS: t.FetchMS, ImportMS: t.ImportMS, FetchedMB: float64(t.FetchedBytes) / 1e6,
		HotMS: t.HotMS, PrefillMS: t.PrefillMS, Fetched: t.FetchedBlocks, HotBlocks: t.HotBlocks, HotCached: t.HotTokens,
		PromptToks: c.Usage.PromptTokens,
	}, nil
}

// printTTFT writes the comparison table, the remote hit's breakdown and
// the ratios.
func printTTFT(w io.Writer, tokens, rounds int, r ttftResults, haveLlama bool) {
	fmt.Fprintf(w, "\nTime to first token, %d-token prompt of token ids, F16 model, medians of %d alternating rounds (wall: client clock, request to answer)\n\n", tokens, rounds)
	fmt.Fprintln(w, "| system | TTFT wall ms | server ms | prompt tokens computed | cached |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	for _, row := range ttftRows {
		if len(r[row.key]) == 0 {
			continue
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.0f | %.0f |\n", row.label,
			f(r.median(row.key, func(s ttftSample) float64 { return s.WallMS })),
			f(r.median(row.key, func(s ttftSample) float64 { return s.ServerMS })),
			r.median(row.key, func(s ttftSample) float64 { return float64(s.Computed) }),
			r.median(row.key, func(s ttftSample) float64 { return float64(s.Cached) }))
	}
	if len(r["kv-remote"]) > 0 {
		m := func(g func(ttftSample) float64) string { return f(r.median("kv-remote", g)) }
		fmt.Fprintf(w, "\nkvcache remote hit, medians: lookup %s ms, fetch %s ms for %s MB in %s blocks (of which decode+import %s ms), prefill %s ms of %s token(s)\n",
			m(func(s ttftSample) float64 { return s.LookupMS }),
			m(func(s ttftSample) float64 { return s.FetchMS }),
			strconv.FormatFloat(r.median("kv-remote", func(s ttftSample) float64 { return s.FetchedMB }), 'f', 2, 64),
			m(func(s ttftSample) float64 { return float64(s.Fetched) }),
			m(func(s ttftSample) float64 { return s.ImportMS }),
			m(func(s ttftSample) float64 { return s.PrefillMS }),
			m(func(s ttftSample) float64 { return float64(s.Computed) }))
	}
	if len(r["kv-remote-notier"]) > 0 {
		m := func(g func(ttftSample) float64) string { return f(r.median("kv-remote-notier", g)) }
		fmt.Fprintf(w, "kvcache remote hit, hot tier off, medians: lookup %s ms, fetch %s ms (of which decode+import %s ms), prefill %s ms\n",
			m(func(s ttftSample) float64 { return s.LookupMS }), m(func(s ttftSample) float64 { return s.FetchMS }),
			m(func(s ttftSample) float64 { return s.ImportMS }), m(func(s ttftSample) float64 { return s.PrefillMS }))
	}
	if len(r["kv-hot"]) > 0 {
		m := func(g func(ttftSample) float64) string { return f(r.median("kv-hot", g)) }
		fmt.Fprintf(w, "kvcache hot-tier hit, medians: hot tier %s ms for %s blocks, prefill %s ms\n",
			m(func(s ttftSample) float64 { return s.HotMS }), m(func(s ttftSample) float64 { return float64(s.HotBlocks) }),
			m(func(s ttftSample) float64 { return s.PrefillMS }))
	}
	if !haveLlama {
		fmt.Fprintln(w, "\nllama-server not on PATH: its rows and the ratios are skipped (put llama.cpp's llama-server on PATH, or pass -llama-server).")
		return
	}
	base := r.median("llama-cached", func(s ttftSample) float64 { return s.WallMS })
	for _, k := range []struct{ key, label string }{{"kv-remote", "remote hit"}, {"kv-remote-notier", "remote hit (hot tier off)"}, {"kv-hot", "hot-tier hit"}, {"kv-miss", "miss"}} {
		v := r.median(k.key, func(s ttftSample) float64 { return s.WallMS })
		if v > 0 && base > 0 {
			fmt.Fprintf(w, "kvcache %s / llama-server prompt cache (wall): %.2fx\n", k.label, v/base)
		}
	}
}

// ttftPrompt is round r's prompt: n token ids of the benchmark's
// placeholder pieces (above the byte tokens), different for every round
// and run so nothing is cached before its first request.
func ttftPrompt(run uint64, r, n int) []int {
	rng := rand.New(rand.NewPCG(run, uint64(r)))
	p := make([]int, n)
	for i := range p {
		p[i] = 259 + rng.IntN(BenchConfig().Vocab-259)
	}
	return p
}

// runTTFT starts a cache node, two workers and llama-server (when
// llamaServer is not "") on the F16 model at path, runs the rounds and
// prints the table.
func runTTFT(ctx context.Context, stdout, stderr io.Writer, o options, path, llamaServer string) error {
	cachenode, worker := filepath.Join(o.bin, "cachenode"), filepath.Join(o.bin, "worker")
	for _, b := range []string{cachenode, worker} {
		if _, err := os.Stat(b); err != nil {
			fmt.Fprintf(stdout, "\nTTFT comparison skipped: %s not found (build it with make build, or pass -bin DIR).\n", b)
			return nil
		}
	}
	dir, err := os.MkdirTemp("", "enginebench-ttft-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var procs []*childproc.Proc
	defer func() {
		for _, p := range procs {
			_ = p.Stop(10 * time.Second)
		}
	}()
	fmt.Fprintf(stderr, "TTFT: starting a cache node, three workers%s (logs in %s)\n", map[bool]string{true: " and llama-server", false: ""}[llamaServer != ""], dir)
	node, err := childproc.Start(dir, "cachenode", "grpc", cachenode, "--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0",
		"--metrics-listen", "", "--data", filepath.Join(dir, "node"), "--capacity", "2GiB")
	if err != nil {
		return err
	}
	procs = append(procs, node)
	nodeAddr, err := node.WaitAddr(ctx)
	if err != nil {
		return err
	}
	// Generous cache deadlines: the comparison measures the work, not
	// whether a loaded machine meets the production defaults.
	wargs := []string{"--listen", "127.0.0.1:0", "--cache-nodes", nodeAddr, "--replicas", "1", "--model", path,
		"--lookup-timeout", "10s", "--fetch-timeout", "30s", "--max-concurrent", "1"}
	var urls [3]string
	for i, name := range []string{"worker-a", "worker-b", "worker-c"} {
		args := wargs
		if name == "worker-c" {
			args = append(slices.Clip(wargs), "--hot-cache-bytes", "0")
		}
		p, err := childproc.Start(dir, name, "http", worker, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		a, err := p.WaitAddr(ctx)
		if err != nil {
			return err
		}
		urls[i] = "http://" + a
		if err := childproc.WaitHTTP(ctx, urls[i]+"/healthz"); err != nil {
			return err
		}
	}
	var llamaURL string
	if llamaServer != "" {
		port, err := freePort()
		if err != nil {
			return err
		}
		p, err := childproc.Start(dir, "llama-server", "", llamaServer, "-m", path, "-t", strconv.Itoa(o.threads),
			"--host", "127.0.0.1", "--port", strconv.Itoa(port), "-c", strconv.Itoa(BenchConfig().ContextLen), "-np", "1")
		if err != nil {
			return err
		}
		procs = append(procs, p)
		llamaURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		if err := childproc.WaitHTTP(ctx, llamaURL+"/health"); err != nil {
			return fmt.Errorf("llama-server: %w (log %s)", err, p.LogPath)
		}
	}
	res := ttftResults{}
	run := uint64(time.Now().UnixNano())
	for round := range o.ttftRounds {
		prompt := ttftPrompt(run, round, o.ttftTokens)
		fmt.Fprintf(stderr, "TTFT round %d/%d:", round+1, o.ttftRounds)
		if llamaURL != "" {
			for _, key := range []string{"llama-first", "llama-cached"} {
				s, err := ask(ctx, llamaURL+"/completion", map[string]any{"prompt": prompt, "n_predict": 1, "cache_prompt": true, "temperature": 0}, parseLlamaCompletion)
				if err != nil {
					return err
				}
				res[key] = append(res[key], s)
				fmt.Fprintf(stderr, " %s %.0f ms", key, s.WallMS)
			}
		}
		body := map[string]any{"prompt": prompt, "max_tokens": 1, "temperature": 0}
		s, err := ask(ctx, urls[0]+"/v1/completions", body, parseWorkerCompletion)
		if err != nil {
			return err
		}
		res["kv-miss"] = append(res["kv-miss"], s)
		fmt.Fprintf(stderr, " kv-miss %.0f ms", s.WallMS)
		if err := waitAppended(ctx, urls[0]); err != nil {
			return err
		}
		for _, q := range []struct {
			key string
			url string
		}{{"kv-remote", urls[1]}, {"kv-hot", urls[1]}, {"kv-remote-notier", urls[2]}} {
			key := q.key
			s, err := ask(ctx, q.url+"/v1/completions", body, parseWorkerCompletion)
			if err != nil {
				return err
			}
			if s.Cached == 0 {
				return fmt.Errorf("%s: the worker found nothing cached (logs in %s)", key, dir)
			}
			res[key] = append(res[key], s)
			fmt.Fprintf(stderr, " %s %.0f ms", key, s.WallMS)
		}
		fmt.Fprintln(stderr)
	}
	printTTFT(stdout, o.ttftTokens, o.ttftRounds, res, llamaURL != "")
	return nil
}

// askClient opens a connection per request, for both systems alike. On a
// kept-alive connection llama-server's answer (headers and body written
// apart, Nagle on) waits for the client's delayed ACK: 54 ms wall for a
// repeat its own timings put at 10 ms, which curl, on a fresh connection,
// sees as 10-15 ms.
var askClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// ask posts body as JSON and parses the answer, timing the exchange.
func ask(ctx context.Context, url string, body any, parse func([]byte, float64) (ttftSample, error)) (ttftSample, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return ttftSample{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return ttftSample{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := askClient.Do(req)
	if err != nil {
		return ttftSample{}, err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	wall := float64(time.Since(t0).Microseconds()) / 1e3
	if err != nil {
		return ttftSample{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return ttftSample{}, fmt.Errorf("%s: %s: %.300s", url, resp.Status, out)
	}
	return parse(out, wall)
}

// waitAppended polls the worker's append_pending gauge until its blocks
// are stored on the node.
func waitAppended(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/metrics", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			v, ok := gaugeValue(resp.Body, "kvcache_worker_append_pending")
			resp.Body.Close()
			if ok && v == 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: appends not done: %w", url, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// gaugeValue finds an unlabelled sample of name in a Prometheus text page.
func gaugeValue(r io.Reader, name string) (float64, bool) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// freePort asks the kernel for a free loopback port for llama-server,
// which must be told one (a small race, acceptable in a benchmark).
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
