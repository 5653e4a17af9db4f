package cluster_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// completion is the part of a worker's answer the tests read.
type completion struct {
	Usage struct {
		PromptTokens        int `json:"prompt_tokens"`
		PromptTokensDetails struct {
			CachedTokens int `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
	} `json:"usage"`
}

var httpc = &http.Client{Timeout: 15 * time.Second}

// complete sends one short completion and returns its usage.
func complete(ctx context.Context, url, prompt string) (completion, error) {
	var out completion
	body, _ := json.Marshal(map[string]any{"prompt": prompt, "max_tokens": 2, "temperature": 0})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/completions", bytes.NewReader(body))
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpc.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("%s: %s", resp.Status, b)
	}
	return out, json.Unmarshal(b, &out)
}

// prompts builds n prompts that share a system prefix, each ~300 tokens.
func prompts(n int) []string {
	sys := "You are a careful assistant for the kvcache cluster tests. Answer briefly. "
	out := make([]string, n)
	for i := range out {
		out[i] = sys + fmt.Sprintf("Document %d: ", i) + strings.Repeat(fmt.Sprintf("fact %d is stable; ", i*7+3), 12)
	}
	return out
}

// fullyCached reports whether a completion reused every full block.
func fullyCached(c completion) bool {
	u := c.Usage
	return u.PromptTokens > 0 && u.PromptTokensDetails.CachedTokens >= u.PromptTokens-16
}

// warm computes every prompt once and waits until every worker gets a
// full hit on every prompt (appends are asynchronous).
// It returns the slowest of those cold requests (a full prefill on this
// machine, now): the baseline that timing bounds are derived from.
func (c *cluster) warm(ps []string) time.Duration {
	c.t.Helper()
	ctx := context.Background()
	var slowest time.Duration
	for _, p := range ps {
		start := time.Now()
		if _, err := complete(ctx, c.workers[0].url(), p); err != nil {
			c.t.Fatalf("warm-up request: %v", err)
		}
		slowest = max(slowest, time.Since(start))
	}
	c.waitAllHit(ps, 30*time.Second, "warm-up: every prompt cached")
	return slowest
}

// waitAllHit polls until every worker reports a full hit for every prompt.
func (c *cluster) waitAllHit(ps []string, d time.Duration, what string) {
	c.t.Helper()
	waitFor(c.t, d, what, func() bool {
		for _, w := range c.workers {
			for _, p := range ps {
				r, err := complete(context.Background(), w.url(), p)
				if err != nil || !fullyCached(r) {
					return false
				}
			}
		}
		return true
	})
}

// load sends completions to the workers from one goroutine per worker
// until stopped, counting failures (an error or a non-200 answer).
type load struct {
	ok, failed atomic.Int64
	maxLat     atomic.Int64 // nanoseconds
	mu         sync.Mutex
	errs       []string
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func startLoad(c *cluster, ps []string) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel}
	for wi, w := range c.workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := wi; ctx.Err() == nil; i++ {
				start := time.Now()
				// Each request has its own deadline, not the load's ctx, so
				// stopping the load never fails a request.
				rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := complete(rctx, w.url(), ps[i%len(ps)])
				rcancel()
				lat := time.Since(start)
				for {
					m := l.maxLat.Load()
					if int64(lat) <= m || l.maxLat.CompareAndSwap(m, int64(lat)) {
						break
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Sprintf("%s: %v", w.name, err))
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

// stop ends the load and fails the test on any failed request.
func (l *load) stop(t *testing.T) {
	t.Helper()
	l.cancel()
	l.wg.Wait()
	t.Logf("load: %d requests ok, %d failed, slowest %v", l.ok.Load(), l.failed.Load(), time.Duration(l.maxLat.Load()).Round(time.Millisecond))
	if n := l.failed.Load(); n > 0 {
		t.Errorf("%d worker requests failed; first: %v", n, l.errs[:min(3, len(l.errs))])
	}
	if l.ok.Load() == 0 {
		t.Error("no worker request completed")
	}
}

// seed stores a chain of synthetic blocks through cl and returns them.
func seed(t *testing.T, cl *client.Client, ns prefix.Namespace, n int) []client.Block {
	t.Helper()
	s := kvblock.Shape{Tokens: 16, Layers: 2, KVHeads: 2, HeadDim: 32}
	elems := s.Tokens * s.Layers * s.KVHeads * s.HeadDim
	parent := ns.Root()
	var out []client.Block
	for i := range n {
		toks := make([]uint32, s.Tokens)
		for j := range toks {
			toks[j] = uint32(i*s.Tokens + j)
		}
		key := prefix.Next(parent, toks)
		kv := &kvblock.KV{Shape: s, K: make([]float32, elems), V: make([]float32, elems)}
		for j := range kv.K {
			kv.K[j], kv.V[j] = float32(j%7)/4, -float32(j%5)/4
		}
		m := kvblock.Meta{Codec: kvblock.F16, StartPos: uint32(i * s.Tokens), RoPE: true, Sinks: -1}
		if i > 0 {
			m.Parent, m.HasParent = parent, true
		}
		data, err := kvblock.Encode(nil, kv, m)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, client.Block{Key: key, Data: data})
		parent = key
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.Put(ctx, ns, out); err != nil {
		t.Fatalf("seed blocks: %v", err)
	}
	return out
}

func keysOf(bs []client.Block) []prefix.Key {
	out := make([]prefix.Key, len(bs))
	for i, b := range bs {
		out[i] = b.Key
	}
	return out
}

// clientLoad is the Go client under steady load: lookups and fetches of a
// seeded chain, counting errors and short answers.
type clientLoad struct {
	calls, errs, short atomic.Int64
	cancel             context.CancelFunc
	done               chan struct{}
}

func startClientLoad(cl *client.Client, ns prefix.Namespace, blocks []client.Block) *clientLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &clientLoad{cancel: cancel, done: make(chan struct{})}
	keys := keysOf(blocks)
	go func() {
		defer close(l.done)
		for ctx.Err() == nil {
			cctx, ccancel := context.WithTimeout(context.Background(), 3*time.Second)
			n, err := cl.Lookup(cctx, ns, keys)
			raw, ferr := cl.FetchRaw(cctx, ns, keys, nil)
			ccancel()
			l.calls.Add(1)
			if err != nil || ferr != nil {
				l.errs.Add(1)
			} else if n != len(keys) || len(raw) != len(keys) {
				l.short.Add(1)
			}
		}
	}()
	return l
}

func (l *clientLoad) stop(t *testing.T) {
	t.Helper()
	l.cancel()
	<-l.done
	t.Logf("client load: %d lookup+fetch rounds, %d errors, %d short", l.calls.Load(), l.errs.Load(), l.short.Load())
	if l.errs.Load() > 0 {
		t.Errorf("the Go client saw %d errors", l.errs.Load())
	}
}
