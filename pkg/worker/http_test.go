package worker

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// Two workers on their own listeners and their own copies of the model
// share one cache node: the prefix worker A computed is a hit on worker B.
func TestTwoWorkersShareANode(t *testing.T) {
	node, _ := startNode(t)
	mk := func() (*Worker, string) {
		m, err := model.Synthetic("tiny-test", model.TinyConfig(), 42) // same identity, separate copy
		if err != nil {
			t.Fatal(err)
		}
		w := newWorker(t, Config{Model: m, Cache: newClient(t, node.Addr())})
		return w, server(t, w)
	}
	wa, urlA := mk()
	_, urlB := mk()

	system := strings.Repeat("You are a helpful assistant of the kvcache project. ", 6)
	code, a := post(t, urlA+"/v1/completions", jsonString(map[string]any{"prompt": system + "Question one?", "max_tokens": 4, "temperature": 0}))
	if code != http.StatusOK || cachedTokens(t, a) != 0 {
		t.Fatalf("worker A: %d %v, want 200 with nothing cached", code, a)
	}
	flush(t, wa)
	code, b := post(t, urlB+"/v1/completions", jsonString(map[string]any{"prompt": system + "Question two?", "max_tokens": 4, "temperature": 0}))
	if code != http.StatusOK {
		t.Fatalf("worker B: %d %v", code, b)
	}
	shared := 1 + len(system+"Question ") // BOS + the common text
	if got := cachedTokens(t, b); got == 0 || got > shared {
		t.Fatalf("worker B cached %d tokens, want a hit of at most %d", got, shared)
	}
	tm := b["timings"].(map[string]any)
	if tm["fetched_blocks"].(float64) == 0 || tm["fetched_bytes"].(float64) == 0 {
		t.Errorf("timings of a hit show no fetch: %v", tm)
	}
}

func TestBadInputIs400(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	long := strings.Repeat("x", model.TinyConfig().ContextLen)
	tests := []struct {
		name, path, body string
		param, code      string
	}{
		{"malformed json", "/v1/completions", `{"prompt": "hi"`, "", "invalid_json"},
		{"not an object", "/v1/completions", `[1,2]`, "", "invalid_type"},
		{"trailing data", "/v1/completions", `{"prompt":"hi"} {}`, "", "invalid_json"},
		{"empty body", "/v1/completions", ``, "", "invalid_json"},
		{"max_tokens string", "/v1/completions", `{"prompt":"hi","max_tokens":"ten"}`, "max_tokens", "invalid_type"},
		{"max_tokens fraction", "/v1/completions", `{"prompt":"hi","max_tokens":1.5}`, "max_tokens", "invalid_type"},
		{"temperature string", "/v1/completions", `{"prompt":"hi","temperature":"hot"}`, "temperature", "invalid_type"},
		{"stream not bool", "/v1/completions", `{"prompt":"hi","stream":"yes"}`, "stream", "invalid_type"},
		{"prompt number", "/v1/completions", `{"prompt":5}`, "prompt", "invalid_type"},
		{"prompt mixed array", "/v1/completions", `{"prompt":[1,"a"]}`, "prompt", "invalid_type"},
		{"prompt missing", "/v1/completions", `{"max_tokens":3}`, "prompt", "missing_required_parameter"},
		{"prompt empty", "/v1/completions", `{"prompt":""}`, "prompt", "invalid_value"},
		{"prompt batch", "/v1/completions", `{"prompt":["a","b"]}`, "prompt", "invalid_value"},
		{"token out of vocab", "/v1/completions", `{"prompt":[1,99999]}`, "prompt", "invalid_value"},
		{"negative token", "/v1/completions", `{"prompt":[-1]}`, "prompt", "invalid_value"},
		{"prompt too long", "/v1/completions", jsonString(map[string]any{"prompt": long}), "prompt", "context_length_exceeded"},
		{"max_tokens zero", "/v1/completions", `{"prompt":"hi","max_tokens":0}`, "max_tokens", "invalid_value"},
		{"max_tokens negative", "/v1/completions", `{"prompt":"hi","max_tokens":-3}`, "max_tokens", "invalid_value"},
		{"max_tokens beyond context", "/v1/completions", `{"prompt":"hi","max_tokens":100000}`, "max_tokens", "invalid_value"},
		{"unknown model", "/v1/completions", `{"model":"gpt-4","prompt":"hi"}`, "model", "model_not_found"},
		{"temperature range", "/v1/completions", `{"prompt":"hi","temperature":3}`, "temperature", "invalid_value"},
		{"top_p range", "/v1/completions", `{"prompt":"hi","top_p":0}`, "top_p", "invalid_value"},
		{"n zero", "/v1/completions", `{"prompt":"hi","n":0}`, "n", "invalid_value"},
		{"n too many", "/v1/completions", `{"prompt":"hi","n":17}`, "n", "invalid_value"},
		{"chat no messages", "/v1/chat/completions", `{"messages":[]}`, "messages", "missing_required_parameter"},
		{"chat messages string", "/v1/chat/completions", `{"messages":"hi"}`, "messages", "invalid_type"},
		{"chat content number", "/v1/chat/completions", `{"messages":[{"role":"user","content":3}]}`, "messages.[0].content", "invalid_type"},
		{"chat no role", "/v1/chat/completions", `{"messages":[{"content":"hi"}]}`, "messages.[0].role", "missing_required_parameter"},
		{"chat image part", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages.[0].content", "invalid_value"},
		{"chat unknown model", "/v1/chat/completions", `{"model":"llama","messages":[{"role":"user","content":"hi"}]}`, "model", "model_not_found"},
		{"chat too long", "/v1/chat/completions", jsonString(map[string]any{"messages": []map[string]string{{"role": "user", "content": long}}}), "messages", "context_length_exceeded"},
		{"chat max_tokens beyond context", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_completion_tokens":100000}`, "max_tokens", "invalid_value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := post(t, url+tt.path, tt.body)
			if code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400: %v", code, body)
			}
			checkError(t, body, tt.param, tt.code)
		})
	}
	t.Run("body too large", func(t *testing.T) {
		code, body := post(t, url+"/v1/completions", `{"prompt":"`+strings.Repeat("a", maxBodyBytes)+`"}`)
		if code != http.StatusRequestEntityTooLarge {
			t.Fatalf("status %d, want 413", code)
		}
		checkError(t, body, "", "request_too_large")
	})
}

func checkError(t *testing.T, body map[string]any, param, code string) {
	t.Helper()
	e, ok := body["error"].(map[string]any)
	if !ok {
		t.Fatalf("no error object in %v", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := e[k]; !ok {
			t.Errorf("error object lacks %q: %v", k, e)
		}
	}
	if e["type"] != "invalid_request_error" || e["message"] == "" {
		t.Errorf("error %v: want type invalid_request_error and a message", e)
	}
	gotParam, _ := e["param"].(string)
	if gotParam != param || e["code"] != code {
		t.Errorf("error param %q code %v, want %q %q (%v)", gotParam, e["code"], param, code, e["message"])
	}
}

// sse reads a server-sent event stream into its data payloads, checking
// that it ends with [DONE].
func sse(t *testing.T, url, body string) []map[string]any {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, content type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), raw)
	}
	var chunks []map[string]any
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("not an SSE data line: %q", line)
		}
		if done {
			t.Fatalf("data after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			t.Fatalf("chunk %q: %v", data, err)
		}
		chunks = append(chunks, m)
	}
	if !done {
		t.Fatal("stream did not end with [DONE]")
	}
	return chunks
}

func TestStreaming(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	req := map[string]any{"prompt": "Once upon a time", "max_tokens": 12, "temperature": 0}
	_, whole := post(t, url+"/v1/completions", jsonString(req))
	wantText := whole["choices"].([]any)[0].(map[string]any)["text"].(string)

	req["stream"] = true
	chunks := sse(t, url+"/v1/completions", jsonString(req))
	if len(chunks) < 2 {
		t.Fatalf("%d chunks, want one per token and a final one", len(chunks))
	}
	var text strings.Builder
	for i, c := range chunks {
		ch := c["choices"].([]any)[0].(map[string]any)
		text.WriteString(ch["text"].(string))
		last := i == len(chunks)-1
		if (ch["finish_reason"] != nil) != last {
			t.Errorf("chunk %d finish_reason %v", i, ch["finish_reason"])
		}
		if c["object"] != "text_completion" {
			t.Errorf("chunk object %v", c["object"])
		}
	}
	if text.String() != wantText {
		t.Errorf("streamed text %q, want %q", text.String(), wantText)
	}
	final := chunks[len(chunks)-1]
	if final["timings"] == nil {
		t.Errorf("final chunk lacks timings: %v", final)
	}
	for i, c := range chunks {
		if _, ok := c["usage"]; ok {
			t.Errorf("chunk %d has usage without stream_options.include_usage: %v", i, c)
		}
	}

	chat := sse(t, url+"/v1/chat/completions", jsonString(map[string]any{
		"messages": []map[string]string{{"role": "user", "content": "hello"}}, "max_tokens": 6, "temperature": 0, "stream": true}))
	first := chat[0]["choices"].([]any)[0].(map[string]any)["delta"].(map[string]any)
	if first["role"] != "assistant" || chat[0]["object"] != "chat.completion.chunk" {
		t.Errorf("first chat chunk %v, want the assistant role delta", chat[0])
	}
	if r := chat[len(chat)-1]["choices"].([]any)[0].(map[string]any)["finish_reason"]; r != "length" && r != "stop" {
		t.Errorf("chat finish_reason %v", r)
	}
}

// The chat endpoint renders messages with the model's template: its answer
// equals a completion on the template's tokens.
func TestChatTemplateApplied(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	msgs := []tokenizer.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Name a color."}}
	code, chat := post(t, url+"/v1/chat/completions", jsonString(map[string]any{
		"model": w.ModelID(), "messages": msgs, "max_tokens": 8, "temperature": 0}))
	if code != http.StatusOK {
		t.Fatalf("chat: %d %v", code, chat)
	}
	m := w.m
	ids, err := tokenizer.EncodeChat(m.Tokenizer(), m.ChatTemplate(), msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	if text, _ := m.ChatTemplate().Render(msgs, true); !strings.Contains(text, "<|im_start|>assistant") {
		t.Fatal("the tiny model's template is not ChatML")
	}
	if got := int(chat["usage"].(map[string]any)["prompt_tokens"].(float64)); got != len(ids) {
		t.Errorf("prompt tokens %d, want %d from the template", got, len(ids))
	}
	_, comp := post(t, url+"/v1/completions", jsonString(map[string]any{"prompt": ids, "max_tokens": 8, "temperature": 0}))
	choice := chat["choices"].([]any)[0].(map[string]any)
	if chat["object"] != "chat.completion" || choice["message"].(map[string]any)["role"] != "assistant" {
		t.Errorf("chat answer shape: %v", chat)
	}
	if got, want := choice["message"].(map[string]any)["content"], comp["choices"].([]any)[0].(map[string]any)["text"]; got != want {
		t.Errorf("chat content %q, completion on the template's tokens %q", got, want)
	}
}

func TestModelsHealthMetrics(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	post(t, url+"/v1/completions", `{"prompt":"hi","max_tokens":2}`)
	get := func(path string) (int, string) {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/v1/models"); code != 200 || !strings.Contains(body, `"id":"tiny-test"`) {
		t.Errorf("/v1/models: %d %s", code, body)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	code, body := get("/metrics")
	for _, s := range []string{`kvcache_worker_requests_total{code="200",endpoint="completions"} 1`, "kvcache_worker_ttft_seconds_count 1", "kvcache_worker_prompt_tokens_total 3", `kvcache_worker_cache_errors_total{op="fetch"} 0`,
		"\ngo_goroutines ", "\nprocess_cpu_seconds_total ", "\nprocess_resident_memory_bytes ",
		"kvcache_worker_requests_running 0", "kvcache_worker_requests_waiting 0", "kvcache_worker_queue_capacity 8", "kvcache_worker_running_capacity 4",
		`kvcache_worker_e2e_request_latency_seconds_count{endpoint="completions"} 1`, `kvcache_worker_e2e_request_latency_seconds_count{endpoint="chat"} 0`,
		"kvcache_worker_inter_token_latency_seconds_count 1", "kvcache_worker_prefill_tokens_per_second_count 1", "kvcache_worker_decode_tokens_per_second_count 1",
		"kvcache_worker_prefills_total 1", "kvcache_worker_prefill_tokens_total 3", "kvcache_worker_completion_tokens_total 2",
		`kvcache_worker_rejected_requests_total{reason="queue_full"} 0`, `kvcache_worker_rejected_requests_total{reason="client_gone"} 0`} {
		if code != 200 || !strings.Contains(body, s) {
			t.Errorf("/metrics lacks %q", s)
		}
	}
	if code, _ := get("/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}

// Concurrent requests share the forward-pass semaphore and the appender;
// each greedy answer equals the one it gets alone.
func TestConcurrentRequests(t *testing.T) {
	_, c := startNode(t)
	w := newWorker(t, Config{Cache: c, MaxQueue: 16})
	url := server(t, w)
	prompts := []string{strings.Repeat("shared prefix ", 20) + "one", strings.Repeat("shared prefix ", 20) + "two", "short", strings.Repeat("other ", 30)}
	body := func(p string) string {
		return jsonString(map[string]any{"prompt": p, "max_tokens": 6, "temperature": 0})
	}
	want := make([]any, len(prompts))
	for i, p := range prompts {
		_, m := post(t, url+"/v1/completions", body(p))
		want[i] = m["choices"].([]any)[0].(map[string]any)["text"]
	}
	var wg sync.WaitGroup
	got := make([]any, 2*len(prompts))
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Post(url+"/v1/completions", "application/json", strings.NewReader(body(prompts[i%len(prompts)])))
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var m map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != 200 {
				t.Errorf("request %d: %d %v", i, resp.StatusCode, err)
				return
			}
			got[i] = m["choices"].([]any)[0].(map[string]any)["text"]
		}()
	}
	wg.Wait()
	for i := range got {
		if got[i] != want[i%len(prompts)] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i%len(prompts)])
		}
	}
}
