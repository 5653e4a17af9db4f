package worker

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestWaitAppendMakesTheNextRequestHit: with WaitAppend, over real HTTP
// and a real node, a response completes only after its blocks are stored,
// so the same prompt sent right after it (no sleep, no polling) is a hit
// on every full block the prompt can reuse, in both response forms.
func TestWaitAppendMakesTheNextRequestHit(t *testing.T) {
	const b = 16
	for _, tc := range []struct {
		name   string
		stream bool
	}{{"json", false}, {"stream", true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, c := startNode(t)
			w := newWorker(t, Config{Cache: c, BlockTokens: b, WaitAppend: true})
			url := server(t, w)
			prompt := textPrompt(11, 3*b+5) // 53 tokens: 3 full blocks
			body := fmt.Sprintf(`{"prompt":%s,"max_tokens":4,"temperature":0,"stream":%v,"stream_options":%s}`,
				jsonString(prompt), tc.stream, map[bool]string{true: `{"include_usage":true}`, false: "null"}[tc.stream])
			for i, want := range []int{0, 3 * b} {
				got := completionCached(t, url, body, tc.stream)
				if got != want {
					t.Fatalf("request %d: cached_tokens %d, want %d", i+1, got, want)
				}
				if p := metricValue(t, w, "kvcache_worker_append_pending", ""); p != 0 {
					t.Fatalf("request %d answered with %v appends pending", i+1, p)
				}
			}
		})
	}
}

// TestWaitAppendIsBounded: with a node that never answers, a WaitAppend
// response still completes, once PutTimeout has passed.
func TestWaitAppendIsBounded(t *testing.T) {
	const b = 16
	put := 300 * time.Millisecond
	w := newWorker(t, Config{Cache: newClient(t, blackhole(t)), BlockTokens: b, WaitAppend: true,
		LookupTimeout: 50 * time.Millisecond, PutTimeout: put})
	url := server(t, w)
	body := fmt.Sprintf(`{"prompt":%s,"max_tokens":2,"temperature":0}`, jsonString(textPrompt(12, 2*b+1)))
	start := time.Now()
	if got := completionCached(t, url, body, false); got != 0 {
		t.Fatalf("cached_tokens %d from a node that never answers", got)
	}
	if took := time.Since(start); took < put {
		t.Fatalf("answered after %v, before the %v PutTimeout: did not wait for the append", took, put)
	}
}

// completionCached posts a completion and returns its
// usage.prompt_tokens_details.cached_tokens (from the usage chunk when
// streaming).
func completionCached(t *testing.T, url, body string, stream bool) int {
	t.Helper()
	resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, %v: %s", resp.StatusCode, err, raw)
	}
	if !stream {
		var m map[string]any
		decodeJSON(t, raw, &m)
		return cachedTokens(t, m)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok || data == "[DONE]" || !strings.Contains(data, `"usage"`) {
			continue
		}
		var m map[string]any
		decodeJSON(t, []byte(data), &m)
		if m["usage"] != nil {
			return cachedTokens(t, m)
		}
	}
	t.Fatalf("no usage chunk in %s", raw)
	return 0
}

func decodeJSON(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
}
