package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/model"
)

var (
	tinyOnce sync.Once
	tiny     *model.Model
)

// tinyModel is a TinyConfig-shaped synthetic model, fast under -race.
func tinyModel(t testing.TB) *model.Model {
	t.Helper()
	tinyOnce.Do(func() {
		m, err := model.Synthetic("tiny-test", model.TinyConfig(), 42)
		if err != nil {
			panic(err)
		}
		tiny = m
	})
	return tiny
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newWorker builds a worker closed at cleanup. Timeouts are generous
// because -race slows gRPC; tests of deadlines set their own.
func newWorker(t testing.TB, cfg Config) *Worker {
	t.Helper()
	if cfg.Model == nil {
		cfg.Model = tinyModel(t)
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.LookupTimeout == 0 {
		cfg.LookupTimeout = 5 * time.Second
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 10 * time.Second
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Errorf("close worker: %v", err)
		}
	})
	return w
}

// newClient returns a client for addrs, closed at cleanup.
func newClient(t testing.TB, addrs ...string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Nodes: addrs, Logger: quietLogger(), CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// startNode starts one real cache node and returns a client for it.
func startNode(t testing.TB) (*testnode.Node, *client.Client) {
	t.Helper()
	n := testnode.Start(t, cachenode.Config{NoSync: true})
	return n, newClient(t, n.Addr())
}

func flush(t testing.TB, w *Worker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
}

// run generates with a logits hook and returns the result and a copy of
// every step's logits.
func run(t testing.TB, w *Worker, req Request) (*Result, [][]float32) {
	t.Helper()
	var logits [][]float32
	res, err := w.generate(context.Background(), req, func(_ int, l []float32) {
		logits = append(logits, append([]float32(nil), l...))
	})
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return res, logits
}

// textPrompt returns a deterministic English-like prompt of n bytes (the
// byte-level tokenizer makes that n tokens) that starts with BOS.
func textPrompt(seed, n int) []int {
	words := []string{"the", "cache", "model", "block", "token", "prefix", "worker", "node", "a", "of", "and", "fetch", "prefill", "key", "value"}
	var b bytes.Buffer
	x := uint32(seed*2654435761 + 1)
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b.WriteString(words[x%uint32(len(words))])
		b.WriteByte(' ')
	}
	ids := []int{256} // BOS
	for _, c := range b.Bytes()[:n-1] {
		ids = append(ids, int(c))
	}
	return ids
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// server serves w's API on a real loopback listener.
func server(t testing.TB, w *Worker) string {
	t.Helper()
	s := httptest.NewServer(w.Handler())
	t.Cleanup(s.Close)
	return s.URL
}

// post sends a JSON body and decodes the JSON answer into a map.
func post(t testing.TB, url, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(url, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatalf("post %s: %v", url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("post %s: answer %d is not JSON: %v: %q", url, resp.StatusCode, err, raw)
	}
	return resp.StatusCode, m
}

// cachedTokens digs usage.prompt_tokens_details.cached_tokens out of an
// answer.
func cachedTokens(t testing.TB, m map[string]any) int {
	t.Helper()
	u, ok := m["usage"].(map[string]any)
	if !ok {
		t.Fatalf("no usage in %v", m)
	}
	d := u["prompt_tokens_details"].(map[string]any)
	return int(d["cached_tokens"].(float64))
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return string(b)
}

// metricValue returns the value of a counter or gauge in w's registry,
// the series whose first label value is label ("" for unlabelled ones).
func metricValue(t testing.TB, w *Worker, name, label string) float64 {
	t.Helper()
	mfs, err := w.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) == 0 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

func readAll(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
