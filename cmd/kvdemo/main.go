// Command kvdemo shows the KV cache at work on one machine: it starts three
// cache nodes and two workers (the embedded model, every worker using all
// three nodes), sends a shared-prefix workload alternately to both workers,
// prints one line per request and a summary, then TTFT of a hit and a
// miss for a sweep of prefix lengths, and stops everything it started,
// also on error or Ctrl-C. Progress (each process started, each request
// sent, a heartbeat while one runs) goes to stderr as it happens;
// --plot DIR draws the TTFT sweep and the hit ratio over time
// (internal/plots).
//
//	make demo    # builds ./bin and runs: kvdemo --bin ./bin --plot plots
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/internal/childproc"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kvdemo:", err)
		os.Exit(1)
	}
}

type options struct {
	bin                     string
	nodes, workers          int
	codec                   string
	maxTokens               int
	systemTokens, docTokens int
	sweep                   []int  // shared-prefix lengths of the TTFT sweep
	plotDir                 string // where to write the plots; "" = none
	timeout                 time.Duration
}

func run() error {
	var o options
	flag.StringVar(&o.bin, "bin", "./bin", "directory holding the cachenode and worker binaries")
	flag.IntVar(&o.nodes, "nodes", 3, "cache nodes to start")
	flag.IntVar(&o.workers, "workers", 2, "workers to start")
	flag.StringVar(&o.codec, "codec", "int8", "codec the workers append with")
	flag.IntVar(&o.maxTokens, "max-tokens", 8, "tokens generated per request")
	flag.IntVar(&o.systemTokens, "system-tokens", 1000, "length of the shared system prompt")
	flag.IntVar(&o.docTokens, "doc-tokens", 1000, "length of the shared document")
	sweep := flag.String("sweep", "64,128,256,512", "shared-prefix lengths (tokens) of the TTFT hit-vs-miss sweep; empty = none")
	flag.StringVar(&o.plotDir, "plot", "", "write the plots (PNG and SVG) into this directory")
	flag.DurationVar(&o.timeout, "timeout", 170*time.Second, "give up after this long")
	version := buildinfo.Flag(flag.CommandLine)
	flag.Parse()
	if *version {
		return buildinfo.Print(os.Stdout, "kvdemo")
	}
	var err error
	if o.sweep, err = parseSweep(*sweep); err != nil {
		return err
	}
	p := newProgress(os.Stderr, 5*time.Second)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	dir, err := os.MkdirTemp("", "kvdemo-")
	if err != nil {
		return err
	}
	var procs []*childproc.Proc
	// Cleanup runs on every path out of run, Ctrl-C included: the signal
	// only cancels ctx, so the deferred stops still happen.
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			if err := procs[i].Stop(5 * time.Second); err != nil {
				fmt.Fprintln(os.Stderr, "kvdemo:", err)
			}
		}
		os.RemoveAll(dir)
		fmt.Printf("stopped %d processes, removed %s\n", len(procs), dir)
	}()

	start := time.Now()
	workers, err := startCluster(ctx, o, dir, &procs, p)
	if err != nil {
		return err
	}
	info, err := modelInfo(ctx, workers[0].url)
	if err != nil {
		return err
	}
	fmt.Printf("started %d cache nodes and %d workers in %.1fs; model %s, %d B of f16 KV per token, %d-token blocks, codec %s\n\n",
		o.nodes, o.workers, time.Since(start).Seconds(), info.ID, info.KVBytesPerToken, info.BlockTokens, info.Codec)

	t0 := time.Now()
	rows, err := runSteps(ctx, o, workers, workload(o.systemTokens, o.docTokens), newTable(os.Stdout), p, t0)
	if err != nil {
		return err
	}
	printSummary(os.Stdout, summarize(rows, info.KVBytesPerToken), info.Codec)
	var swept []sweepPoint
	if len(o.sweep) > 0 {
		fmt.Printf("\nTTFT against the shared prefix: each prompt once on one worker (a miss), then on the other (a hit)\n\n")
		srows, err := runSteps(ctx, o, workers, sweepSteps(o.sweep), newTable(os.Stdout), p, t0)
		if err != nil {
			return err
		}
		swept = sweepPoints(srows)
		printSweep(os.Stdout, swept)
	}
	if o.plotDir != "" {
		paths, err := writePlots(o.plotDir, rows, swept)
		if err != nil {
			return err
		}
		fmt.Println()
		for _, path := range paths {
			fmt.Printf("wrote %s\n", path)
		}
	}
	fmt.Printf("total time          %.1fs\n", time.Since(start).Seconds())
	return nil
}

// endpoint is a started worker.
type endpoint struct {
	name, url string
}

// startCluster starts the nodes and then the workers, appending every
// child to procs as soon as it runs so the caller can stop it.
func startCluster(ctx context.Context, o options, dir string, procs *[]*childproc.Proc, prog *progress) ([]endpoint, error) {
	prog.printf("starting %d cache nodes and %d workers (logs in %s)", o.nodes, o.workers, dir)
	var addrs []string
	for i := range o.nodes {
		name := fmt.Sprintf("node-%d", i+1)
		data := filepath.Join(dir, name)
		p, err := childproc.Start(dir, name, "grpc", filepath.Join(o.bin, "cachenode"),
			"--listen", "127.0.0.1:0", "--data-listen", "127.0.0.1:0", "--metrics-listen", "", "--data", data, "--node-id", name)
		if err != nil {
			return nil, err
		}
		*procs = append(*procs, p)
		a, err := p.WaitAddr(ctx)
		if err != nil {
			return nil, err
		}
		prog.printf("%s serving on %s", name, a)
		addrs = append(addrs, a)
	}
	var eps []endpoint
	for i := range o.workers {
		name := fmt.Sprintf("worker-%d", i+1)
		p, err := childproc.Start(dir, name, "http", filepath.Join(o.bin, "worker"),
			"--listen", "127.0.0.1:0", "--cache-nodes", strings.Join(addrs, ","), "--codec", o.codec)
		if err != nil {
			return nil, err
		}
		*procs = append(*procs, p)
		eps = append(eps, endpoint{name: name})
	}
	for i, p := range (*procs)[o.nodes:] {
		stop := prog.during(eps[i].name + ": loading the model")
		a, err := p.WaitAddr(ctx)
		if err == nil {
			eps[i].url = "http://" + a
			err = childproc.WaitHTTP(ctx, eps[i].url+"/healthz")
		}
		stop()
		if err != nil {
			return nil, err
		}
		prog.printf("%s ready on %s", eps[i].name, eps[i].url)
	}
	return eps, nil
}

type served struct {
	ID              string `json:"id"`
	KVBytesPerToken int    `json:"kv_bytes_per_token"`
	BlockTokens     int    `json:"block_tokens"`
	Codec           string `json:"codec"`
}

func modelInfo(ctx context.Context, url string) (served, error) {
	var list struct{ Data []served }
	if err := call(ctx, http.MethodGet, url+"/v1/models", nil, &list); err != nil {
		return served{}, err
	}
	if len(list.Data) == 0 {
		return served{}, errors.New("worker serves no model")
	}
	return list.Data[0], nil
}

// chatAnswer is the part of a chat completion the demo reads.
type chatAnswer struct {
	Choices []struct {
		Message message `json:"message"`
	} `json:"choices"`
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
	Timings timings `json:"timings"`
}

// runSteps sends the steps alternately to the workers, one at a time,
// printing a table line per request and progress while each runs; t0 is
// the start of the demo's timeline.
func runSteps(ctx context.Context, o options, eps []endpoint, steps []step, tb *table, p *progress, t0 time.Time) ([]row, error) {
	var (
		rows         []row
		conversation []message
		computedBy   = map[string]string{} // group -> worker that computed the prefix a hit reuses
	)
	for i, s := range steps {
		ep := eps[i%len(eps)]
		msgs := s.Messages
		if s.Conversation {
			if len(conversation) == 0 {
				conversation = append(conversation, steps[0].Messages[0]) // the shared system prompt
				computedBy["chat"] = computedBy["system"]
			}
			conversation = append(conversation, msgs...)
			msgs = conversation
		}
		var ans chatAnswer
		body := map[string]any{"messages": msgs, "max_tokens": o.maxTokens, "temperature": 0}
		stop := p.during(fmt.Sprintf("request %d/%d (%s %s) on %s", i+1, len(steps), s.Group, s.Label, ep.name))
		err := call(ctx, http.MethodPost, ep.url+"/v1/chat/completions", body, &ans)
		stop()
		if err != nil {
			return rows, fmt.Errorf("request %d (%s %s) on %s: %w", i+1, s.Group, s.Label, ep.name, err)
		}
		r := row{N: i + 1, Group: s.Group, Label: s.Label, Worker: ep.name, PromptTokens: ans.Usage.PromptTokens,
			CachedTokens: ans.Usage.PromptTokensDetails.CachedTokens, Timings: ans.Timings, Done: time.Since(t0)}
		if r.hit() {
			r.PrefixFrom = computedBy[s.Group]
		}
		// A miss computes the group's shared prefix; a conversation turn
		// also computes the blocks the next turn reuses last.
		if !r.hit() || s.Conversation {
			computedBy[s.Group] = ep.name
		}
		if s.Conversation && len(ans.Choices) > 0 {
			conversation = append(conversation, ans.Choices[0].Message)
		}
		rows = append(rows, r)
		tb.add(r)
		// Appends are asynchronous by design; waiting for them to land
		// makes the next request's hit deterministic instead of a race.
		if err := waitAppended(ctx, ep.url); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

// waitAppended polls the worker's append_pending gauge until it is 0.
func waitAppended(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		if n, err := gauge(ctx, url+"/metrics", "kvcache_worker_append_pending"); err == nil && n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s to append: %w", url, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// gauge reads one unlabelled series from a Prometheus text exposition.
func gauge(ctx context.Context, url, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("%s: no %s", url, name)
}

// call sends body as JSON (nil: no body) and decodes a 200 answer into out.
func call(ctx context.Context, method, url string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(raw))
	}
	return json.Unmarshal(raw, out)
}
