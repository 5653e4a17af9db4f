package deploy_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/worker"
)

// registries starts a real node and a real worker (embedded model) using
// it, sends one completion through the worker so its per-request metrics
// and the node's per-call ones have series, and returns both registries.
func registries(t *testing.T) map[string]*prometheus.Registry {
	t.Helper()
	// With a data plane, so its gauges are registered too.
	n := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: []string{n.Addr()}, Replicas: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w, err := worker.New(worker.Config{Model: model.Default(nil), Cache: c,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(w.Handler())
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	body := `{"prompt":"` + strings.Repeat("metrics are documented. ", 4) + `","max_tokens":3,"temperature":0}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %s\n%s", resp.Status, b)
	}
	return map[string]*prometheus.Registry{"node": n.Registry(), "worker": w.Registry()}
}
