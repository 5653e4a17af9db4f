package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// gateCache holds every Lookup until open is closed: the requests that
// reach it are running (admitted) and stay so.
type gateCache struct {
	open    chan struct{}
	lookups atomic.Int64
}

func (g *gateCache) Lookup(ctx context.Context, _ prefix.Namespace, _ []prefix.Key) (int, error) {
	g.lookups.Add(1)
	select {
	case <-g.open:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (g *gateCache) FetchRawFunc(context.Context, prefix.Namespace, []prefix.Key, [][]byte, func(int, []byte) error) (int, error) {
	return 0, nil
}

func (g *gateCache) FetchRawAfterFunc(context.Context, prefix.Namespace, prefix.Key, []prefix.Key, [][]byte, func(int, []byte) error) (int, error) {
	return 0, nil
}

func (g *gateCache) Put(context.Context, prefix.Namespace, []client.Block) error { return nil }

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// 40 concurrent completions against 4 running places and a queue of 8:
// 28 are answered 429 at once with an OpenAI error and Retry-After, and
// the 12 admitted all succeed.
func TestFloodGets429BeyondTheQueue(t *testing.T) {
	gate := &gateCache{open: make(chan struct{})}
	w := newWorker(t, Config{Cache: gate, MaxRunning: 4, MaxQueue: 8, LookupTimeout: time.Minute})
	url := server(t, w)
	body := jsonString(map[string]any{"prompt": strings.Repeat("flood ", 10), "max_tokens": 2})
	const total = 40
	var (
		wg             sync.WaitGroup
		ok, limited    atomic.Int64
		mu             sync.Mutex
		badRetryAfter  []string
		firstRejection map[string]any
	)
	for range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
			if err != nil {
				t.Error(err)
				return
			}
			raw := readAll(t, resp)
			switch resp.StatusCode {
			case http.StatusOK:
				ok.Add(1)
			case http.StatusTooManyRequests:
				limited.Add(1)
				mu.Lock()
				if ra := resp.Header.Get("Retry-After"); ra != "1" {
					badRetryAfter = append(badRetryAfter, ra)
				}
				if firstRejection == nil {
					_ = jsonUnmarshal(raw, &firstRejection)
				}
				mu.Unlock()
			default:
				t.Errorf("status %d: %s", resp.StatusCode, raw)
			}
		}()
	}
	waitFor(t, "28 rejections", func() bool { return limited.Load() == total-12 })
	if got := gate.lookups.Load(); got != 4 {
		t.Errorf("%d requests running, want 4", got)
	}
	if r, q := metricValue(t, w, "kvcache_worker_requests_running", ""), metricValue(t, w, "kvcache_worker_requests_waiting", ""); r != 4 || q != 8 {
		t.Errorf("gauges running %g waiting %g, want 4 and 8", r, q)
	}
	close(gate.open)
	wg.Wait()
	if ok.Load() != 12 || limited.Load() != 28 {
		t.Errorf("%d answered, %d rejected; want 12 and 28", ok.Load(), limited.Load())
	}
	if len(badRetryAfter) > 0 {
		t.Errorf("Retry-After headers %q, want 1", badRetryAfter)
	}
	e, _ := firstRejection["error"].(map[string]any)
	if e["type"] != "rate_limit_error" || e["code"] != "rate_limit_exceeded" || e["message"] == "" {
		t.Errorf("429 body %v, want an OpenAI error object", firstRejection)
	}
	if got := metricValue(t, w, "kvcache_worker_rejected_requests_total", "queue_full"); got != 28 {
		t.Errorf("rejected{queue_full} = %g, want 28", got)
	}
	if r, q := metricValue(t, w, "kvcache_worker_requests_running", ""), metricValue(t, w, "kvcache_worker_requests_waiting", ""); r != 0 || q != 0 {
		t.Errorf("after the flood: running %g waiting %g", r, q)
	}
}

// A queued request whose client leaves is dropped from the queue: it never
// runs, and its place is free again.
func TestQueuedRequestOfAGoneClientIsDropped(t *testing.T) {
	gate := &gateCache{open: make(chan struct{})}
	w := newWorker(t, Config{Cache: gate, MaxRunning: 1, MaxQueue: 1, LookupTimeout: time.Minute})
	url := server(t, w)
	body := jsonString(map[string]any{"prompt": strings.Repeat("queued ", 10), "max_tokens": 2})
	running := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			running <- 0
			return
		}
		resp.Body.Close()
		running <- resp.StatusCode
	}()
	waitFor(t, "one running", func() bool { return gate.lookups.Load() == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/completions", strings.NewReader(body))
		_, err := http.DefaultClient.Do(req)
		gone <- err
	}()
	waitFor(t, "one waiting", func() bool { return metricValue(t, w, "kvcache_worker_requests_waiting", "") == 1 })
	cancel()
	<-gone
	waitFor(t, "the queue to empty", func() bool { return metricValue(t, w, "kvcache_worker_requests_waiting", "") == 0 })
	if got := metricValue(t, w, "kvcache_worker_rejected_requests_total", "client_gone"); got != 1 {
		t.Errorf("rejected{client_gone} = %g, want 1", got)
	}
	// The queue place is free again: a new request waits instead of a 429.
	third := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
		if err != nil {
			third <- 0
			return
		}
		resp.Body.Close()
		third <- resp.StatusCode
	}()
	waitFor(t, "the third to queue", func() bool { return metricValue(t, w, "kvcache_worker_requests_waiting", "") == 1 })
	close(gate.open)
	if a, b := <-running, <-third; a != 200 || b != 200 {
		t.Errorf("statuses %d and %d, want 200", a, b)
	}
	if got := metricValue(t, w, "kvcache_worker_prefills_total", ""); got != 2 {
		t.Errorf("%g prefills, want 2: the gone client's request must never run", got)
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// serve starts w.NewServer on a loopback listener.
func serveReal(t *testing.T, w *Worker) (string, *http.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := w.NewServer()
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String(), srv
}

// Clients that trickle their headers or body are cut off by the read
// timeouts: every connection is closed by the server, and the goroutines
// they held are released.
func TestTricklingClientsAreClosed(t *testing.T) {
	w := newWorker(t, Config{ReadHeaderTimeout: 300 * time.Millisecond, ReadTimeout: 600 * time.Millisecond})
	addr, _ := serveReal(t, w)
	before := runtime.NumGoroutine()
	const n = 100
	var wg sync.WaitGroup
	closed := atomic.Int64{}
	statuses := sync.Map{}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			body := i%2 == 1
			if body {
				fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
			} else {
				fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
			}
			// Trickle a byte every 50 ms, for up to a minute.
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				if line != "" {
					statuses.Store(i, strings.TrimSpace(line))
				}
				_, _ = io.Copy(io.Discard, r)
			}()
			for range 1200 {
				select {
				case <-done:
					closed.Add(1)
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := c.Write([]byte(" ")); err != nil {
					<-done
					closed.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if closed.Load() != n {
		t.Fatalf("%d of %d trickling connections closed by the server", closed.Load(), n)
	}
	statuses.Range(func(k, v any) bool {
		if k.(int)%2 == 1 && !strings.Contains(v.(string), "408") {
			t.Errorf("trickled body answered %q, want 408", v)
		}
		return true
	})
	waitFor(t, "goroutines to return", func() bool { return runtime.NumGoroutine() <= before+5 })
}

// A stream that lasts longer than ReadTimeout is not cut: the timeout
// bounds reading the request, never the generation.
func TestLongStreamOutlivesReadTimeout(t *testing.T) {
	w := newWorker(t, Config{ReadTimeout: 50 * time.Millisecond})
	addr, _ := serveReal(t, w)
	start := time.Now()
	chunks := sse(t, "http://"+addr+"/v1/completions", jsonString(map[string]any{"prompt": "long", "max_tokens": 400, "temperature": 0, "stream": true}))
	s := reassemble(t, chunks, false)
	if s.reason[0] != "length" {
		t.Fatalf("finish %v after %v, want length", s.reason[0], time.Since(start))
	}
	if time.Since(start) < 50*time.Millisecond {
		t.Logf("the stream took %v, less than the read timeout: the test proves nothing on this machine", time.Since(start))
	}
}
