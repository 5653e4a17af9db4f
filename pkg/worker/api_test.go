package worker

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// choiceOf returns choices[i] of an answer or chunk.
func choiceOf(m map[string]any, i int) map[string]any {
	return m["choices"].([]any)[i].(map[string]any)
}

// streamed reassembles a stream per choice index: the text (chat content
// or completion text), the finish reasons and the logprobs entries.
type streamed struct {
	text    map[int]string
	reason  map[int]any
	lp      map[int][]any // chat: content entries; completions: tokens
	usage   []map[string]any
	chunks  []map[string]any
	hasNull int // chunks with an explicit "usage": null
}

func reassemble(t *testing.T, chunks []map[string]any, chat bool) streamed {
	t.Helper()
	s := streamed{text: map[int]string{}, reason: map[int]any{}, lp: map[int][]any{}, chunks: chunks}
	for _, c := range chunks {
		if u, ok := c["usage"]; ok {
			if u == nil {
				s.hasNull++
			} else {
				s.usage = append(s.usage, c)
			}
		}
		for _, raw := range c["choices"].([]any) {
			ch := raw.(map[string]any)
			i := int(ch["index"].(float64))
			if chat {
				if d, ok := ch["delta"].(map[string]any); ok {
					s.text[i] += str(d["content"])
				}
			} else {
				s.text[i] += ch["text"].(string)
			}
			if r := ch["finish_reason"]; r != nil {
				s.reason[i] = r
			}
			if lp, ok := ch["logprobs"].(map[string]any); ok {
				if chat {
					s.lp[i] = append(s.lp[i], lp["content"].([]any)...)
				} else {
					s.lp[i] = append(s.lp[i], lp["tokens"].([]any)...)
				}
			}
		}
	}
	return s
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

// greedyText is the greedy completion of prompt, without stop strings.
func greedyText(t *testing.T, url, prompt string, tokens int) string {
	t.Helper()
	code, m := post(t, url+"/v1/completions", jsonString(map[string]any{"prompt": prompt, "max_tokens": tokens, "temperature": 0}))
	if code != 200 {
		t.Fatalf("completion: %d %v", code, m)
	}
	return choiceOf(m, 0)["text"].(string)
}

// asciiRun finds n consecutive ASCII characters in s at or after from,
// returning their offset or -1.
func asciiRun(s string, from, n int) int {
	run := 0
	for i := from; i < len(s); i++ {
		if s[i] < utf8.RuneSelf && s[i] > 0 {
			run++
			if run == n {
				return i - n + 1
			}
		} else {
			run = 0
		}
	}
	return -1
}

// A stop string of several tokens (the byte tokenizer makes each byte a
// token and a stream chunk) ends the answer before it, with finish_reason
// stop, identically streamed and whole, and no chunk carries any of it.
func TestStopAcrossChunks(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	const prompt = "Once upon a time"
	full := greedyText(t, url, prompt, 64)
	at := asciiRun(full, 3, 3)
	if at < 0 {
		t.Fatalf("no 3 ASCII characters in a row to use as a stop string in %q", full)
	}
	stop := full[at : at+3]
	want := full[:strings.Index(full, stop)]
	for _, stream := range []bool{false, true} {
		for _, stops := range []any{stop, []string{"\x00never", stop}} {
			t.Run(fmt.Sprintf("stream=%v/%T", stream, stops), func(t *testing.T) {
				body := jsonString(map[string]any{"prompt": prompt, "max_tokens": 64, "temperature": 0, "stop": stops, "stream": stream})
				if !stream {
					code, m := post(t, url+"/v1/completions", body)
					if code != 200 {
						t.Fatalf("%d %v", code, m)
					}
					c := choiceOf(m, 0)
					if c["text"] != want || c["finish_reason"] != "stop" {
						t.Fatalf("text %q finish %v, want %q stop (stop string %q)", c["text"], c["finish_reason"], want, stop)
					}
					return
				}
				chunks := sse(t, url+"/v1/completions", body)
				s := reassemble(t, chunks, false)
				if s.text[0] != want || s.reason[0] != "stop" {
					t.Fatalf("streamed %q finish %v, want %q stop", s.text[0], s.reason[0], want)
				}
				if len(chunks) < 3 {
					t.Errorf("%d chunks: the text was not streamed in pieces", len(chunks))
				}
			})
		}
	}
}

// Streamed and whole answers are identical byte for byte, for every
// option that changes the text.
func TestStreamEqualsWhole(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	chatMsgs := []map[string]string{{"role": "user", "content": "hello there"}}
	tests := []struct {
		name string
		path string
		body map[string]any
	}{
		{"completion", "/v1/completions", map[string]any{"prompt": "The cache", "max_tokens": 24, "temperature": 0}},
		{"completion sampled", "/v1/completions", map[string]any{"prompt": "The cache", "max_tokens": 24, "seed": 5, "temperature": 1}},
		{"completion n=3", "/v1/completions", map[string]any{"prompt": "The cache", "max_tokens": 12, "seed": 9, "n": 3}},
		{"completion echo", "/v1/completions", map[string]any{"prompt": "The cache", "max_tokens": 8, "temperature": 0, "echo": true}},
		{"completion logprobs", "/v1/completions", map[string]any{"prompt": "The cache", "max_tokens": 8, "temperature": 0, "logprobs": 2}},
		{"chat", "/v1/chat/completions", map[string]any{"messages": chatMsgs, "max_tokens": 24, "temperature": 0}},
		{"chat n=2 logprobs", "/v1/chat/completions", map[string]any{"messages": chatMsgs, "max_tokens": 12, "seed": 3, "n": 2, "logprobs": true, "top_logprobs": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chat := strings.Contains(tt.path, "chat")
			code, whole := post(t, url+tt.path, jsonString(tt.body))
			if code != 200 {
				t.Fatalf("%d %v", code, whole)
			}
			tt.body["stream"] = true
			s := reassemble(t, sse(t, url+tt.path, jsonString(tt.body)), chat)
			n := len(whole["choices"].([]any))
			if len(s.text) != n {
				t.Fatalf("stream has %d choices, whole answer %d", len(s.text), n)
			}
			for i := range n {
				c := choiceOf(whole, i)
				text := str(c["text"])
				if chat {
					text = str(c["message"].(map[string]any)["content"])
				}
				if s.text[i] != text || s.reason[i] != c["finish_reason"] {
					t.Errorf("choice %d: streamed %q (%v), whole %q (%v)", i, s.text[i], s.reason[i], text, c["finish_reason"])
				}
				if lp, ok := c["logprobs"].(map[string]any); ok {
					key := "tokens"
					if chat {
						key = "content"
					}
					if got, want := len(s.lp[i]), len(lp[key].([]any)); got != want {
						t.Errorf("choice %d: %d streamed logprobs entries, %d whole", i, got, want)
					}
				}
			}
		})
	}
}

// Usage is sent only with stream_options.include_usage, as a last chunk
// of its own with "choices": [], and then every other chunk says
// "usage": null.
func TestStreamUsageOnlyWhenAsked(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	for _, path := range []string{"/v1/completions", "/v1/chat/completions"} {
		chat := strings.Contains(path, "chat")
		body := map[string]any{"max_tokens": 6, "temperature": 0, "stream": true, "n": 2}
		if chat {
			body["messages"] = []map[string]string{{"role": "user", "content": "hi"}}
		} else {
			body["prompt"] = "hi"
		}
		s := reassemble(t, sse(t, url+path, jsonString(body)), chat)
		if len(s.usage) != 0 || s.hasNull != 0 {
			t.Errorf("%s without include_usage: %d usage chunks, %d null usages", path, len(s.usage), s.hasNull)
		}
		body["stream_options"] = map[string]any{"include_usage": true}
		s = reassemble(t, sse(t, url+path, jsonString(body)), chat)
		if len(s.usage) != 1 {
			t.Fatalf("%s with include_usage: %d usage chunks, want 1", path, len(s.usage))
		}
		last := s.chunks[len(s.chunks)-1]
		if last["usage"] == nil || len(last["choices"].([]any)) != 0 {
			t.Errorf("%s: last chunk %v, want the usage with choices []", path, last)
		}
		if s.hasNull != len(s.chunks)-1 {
			t.Errorf("%s: %d of %d other chunks have usage null", path, s.hasNull, len(s.chunks)-1)
		}
		u := last["usage"].(map[string]any)
		var gen int
		for i := range 2 {
			if s.reason[i] == nil {
				t.Errorf("%s: choice %d has no finish_reason", path, i)
			}
		}
		gen = int(u["completion_tokens"].(float64))
		if gen < 2 || gen > 12 || int(u["total_tokens"].(float64)) != gen+int(u["prompt_tokens"].(float64)) {
			t.Errorf("%s: usage %v", path, u)
		}
	}
}

// The logprobs shapes of the spec: completions' parallel arrays and chat's
// per-token objects; greedy tokens are the most likely ones.
func TestLogprobsShapes(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	code, m := post(t, url+"/v1/completions", `{"prompt":"Once upon","max_tokens":10,"temperature":0,"logprobs":3}`)
	if code != 200 {
		t.Fatalf("%d %v", code, m)
	}
	c := choiceOf(m, 0)
	lp := c["logprobs"].(map[string]any)
	toks, lps, tops, offs := lp["tokens"].([]any), lp["token_logprobs"].([]any), lp["top_logprobs"].([]any), lp["text_offset"].([]any)
	n := int(m["usage"].(map[string]any)["completion_tokens"].(float64))
	if len(toks) != n || len(lps) != n || len(tops) != n || len(offs) != n {
		t.Fatalf("logprobs arrays %d/%d/%d/%d long, want %d each", len(toks), len(lps), len(tops), len(offs), n)
	}
	var joined strings.Builder
	prev := -1.0
	for i := range toks {
		tok := toks[i].(string)
		if hex, ok := strings.CutPrefix(tok, "bytes:"); ok {
			var b byte
			if _, err := fmt.Sscanf(hex, `\x%02x`, &b); err != nil || len(hex) != 4 {
				t.Errorf("token %q: want bytes:\\xNN for a partial character", tok)
			}
			joined.WriteByte(b)
		} else {
			joined.WriteString(tok)
		}
		l := lps[i].(float64)
		top := tops[i].(map[string]any)
		best := math.Inf(-1)
		for _, v := range top {
			best = math.Max(best, v.(float64))
		}
		if l > 0 || len(top) != 3 || math.Abs(best-l) > 1e-9 || top[tok] != l {
			t.Errorf("token %d %q: logprob %g, top %v (greedy: the best of the top)", i, tok, l, top)
		}
		if o := offs[i].(float64); o <= prev {
			t.Errorf("text_offset %v not increasing", offs)
		} else {
			prev = o
		}
	}
	if got := asJSON(joined.String()); got != c["text"] {
		t.Errorf("tokens join to %q, text is %q", got, c["text"])
	}

	code, m = post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"logprobs":true,"top_logprobs":2}`)
	if code != 200 {
		t.Fatalf("%d %v", code, m)
	}
	content := choiceOf(m, 0)["logprobs"].(map[string]any)["content"].([]any)
	if len(content) == 0 {
		t.Fatal("no logprobs content")
	}
	var all []byte
	for i, raw := range content {
		e := raw.(map[string]any)
		top := e["top_logprobs"].([]any)
		if len(top) != 2 || e["logprob"].(float64) > 0 {
			t.Errorf("entry %d: %v", i, e)
		}
		first := top[0].(map[string]any)
		if first["token"] != e["token"] || first["logprob"] != e["logprob"] || first["logprob"].(float64) < top[1].(map[string]any)["logprob"].(float64) {
			t.Errorf("entry %d: top_logprobs %v not best first, greedy token %q", i, top, e["token"])
		}
		for _, b := range e["bytes"].([]any) {
			all = append(all, byte(b.(float64)))
		}
	}
	msg := choiceOf(m, 0)["message"].(map[string]any)["content"].(string)
	if asJSON(string(all)) != msg {
		t.Errorf("logprob bytes %q, content %q", all, msg)
	}
	// No logprobs asked: the field is null.
	_, m = post(t, url+"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	if v, ok := choiceOf(m, 0)["logprobs"]; !ok || v != nil {
		t.Errorf("logprobs %v, want null", v)
	}
}

// n choices share one prefill: the prompt is computed once and forked.
func TestNSharesOnePrefill(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	prompt := strings.Repeat("a shared prompt ", 8)
	_, one := post(t, url+"/v1/completions", jsonString(map[string]any{"prompt": prompt, "max_tokens": 8, "temperature": 0}))
	prefills := metricValue(t, w, "kvcache_worker_prefills_total", "")
	prefillTokens := metricValue(t, w, "kvcache_worker_prefill_tokens_total", "")
	code, two := post(t, url+"/v1/completions", jsonString(map[string]any{"prompt": prompt, "max_tokens": 8, "temperature": 0, "n": 2}))
	if code != 200 {
		t.Fatalf("%d %v", code, two)
	}
	if got := metricValue(t, w, "kvcache_worker_prefills_total", "") - prefills; got != 1 {
		t.Errorf("n=2 ran %g prefills, want 1", got)
	}
	promptTokens := two["usage"].(map[string]any)["prompt_tokens"].(float64)
	if got := metricValue(t, w, "kvcache_worker_prefill_tokens_total", "") - prefillTokens; got != promptTokens {
		t.Errorf("n=2 prefilled %g tokens, want the prompt's %g once", got, promptTokens)
	}
	if len(two["choices"].([]any)) != 2 {
		t.Fatalf("choices: %v", two["choices"])
	}
	for i := range 2 {
		c := choiceOf(two, i)
		if int(c["index"].(float64)) != i || c["text"] != choiceOf(one, 0)["text"] {
			t.Errorf("greedy choice %d %v, want index %d and the n=1 text %q", i, c, i, choiceOf(one, 0)["text"])
		}
	}
	if got := two["usage"].(map[string]any)["completion_tokens"].(float64); got != 16 {
		t.Errorf("completion_tokens %g, want 2 x 8", got)
	}
	// Sampled choices differ (each has its own seed) and are reproducible.
	body := jsonString(map[string]any{"prompt": prompt, "max_tokens": 16, "temperature": 1, "seed": 11, "n": 2})
	_, a := post(t, url+"/v1/completions", body)
	_, b := post(t, url+"/v1/completions", body)
	if choiceOf(a, 0)["text"] == choiceOf(a, 1)["text"] {
		t.Errorf("two sampled choices are identical: %q", choiceOf(a, 0)["text"])
	}
	for i := range 2 {
		if choiceOf(a, i)["text"] != choiceOf(b, i)["text"] {
			t.Errorf("choice %d not reproducible with a seed", i)
		}
	}
}

func TestEcho(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	const prompt = "Echo me"
	gen := greedyText(t, url, prompt, 5)
	for _, p := range []any{prompt, append([]int{256}, []int{'E', 'c', 'h', 'o', ' ', 'm', 'e'}...)} {
		_, m := post(t, url+"/v1/completions", jsonString(map[string]any{"prompt": p, "max_tokens": 5, "temperature": 0, "echo": true}))
		if got := choiceOf(m, 0)["text"]; got != prompt+gen {
			t.Errorf("echo of %v: %q, want %q", p, got, prompt+gen)
		}
	}
}

// Every field the worker cannot honour is a 400 naming it; its neutral
// value is accepted.
func TestUnsupportedFieldsAre400(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, path, body string
		param, code      string
	}{
		{"unknown field", "/v1/completions", `{"prompt":"hi","foo":1}`, "foo", "unknown_parameter"},
		{"unknown chat field", "/v1/chat/completions", `{` + msgs + `,"reasoning_effort":"high"}`, "reasoning_effort", "unknown_parameter"},
		{"response_format schema", "/v1/chat/completions", `{` + msgs + `,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}`, "response_format", "unsupported_parameter"},
		{"response_format json", "/v1/chat/completions", `{` + msgs + `,"response_format":{"type":"json_object"}}`, "response_format", "unsupported_parameter"},
		{"tools", "/v1/chat/completions", `{` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}]}`, "tools", "unsupported_parameter"},
		{"tool_choice", "/v1/chat/completions", `{` + msgs + `,"tool_choice":"auto"}`, "tool_choice", "unsupported_parameter"},
		{"functions", "/v1/chat/completions", `{` + msgs + `,"functions":[{"name":"f"}]}`, "functions", "unsupported_parameter"},
		{"parallel_tool_calls", "/v1/chat/completions", `{` + msgs + `,"parallel_tool_calls":true}`, "parallel_tool_calls", "unsupported_parameter"},
		{"message name", "/v1/chat/completions", `{"messages":[{"role":"user","content":"hi","name":"bob"}]}`, "messages.[0].name", "unsupported_parameter"},
		{"frequency_penalty", "/v1/completions", `{"prompt":"hi","frequency_penalty":0.5}`, "frequency_penalty", "unsupported_parameter"},
		{"presence_penalty", "/v1/chat/completions", `{` + msgs + `,"presence_penalty":-1}`, "presence_penalty", "unsupported_parameter"},
		{"logit_bias", "/v1/completions", `{"prompt":"hi","logit_bias":{"5":10}}`, "logit_bias", "unsupported_parameter"},
		{"store", "/v1/chat/completions", `{` + msgs + `,"store":true}`, "store", "unsupported_parameter"},
		{"best_of", "/v1/completions", `{"prompt":"hi","best_of":3}`, "best_of", "unsupported_parameter"},
		{"suffix", "/v1/completions", `{"prompt":"hi","suffix":"end"}`, "suffix", "unsupported_parameter"},
		{"echo with logprobs", "/v1/completions", `{"prompt":"hi","echo":true,"logprobs":1}`, "logprobs", "unsupported_parameter"},
		{"stream_options without stream", "/v1/completions", `{"prompt":"hi","stream_options":{"include_usage":true}}`, "stream_options", "invalid_value"},
		{"stream_options unknown", "/v1/completions", `{"prompt":"hi","stream":true,"stream_options":{"chunk":1}}`, "chunk", "unknown_parameter"},
		{"top_logprobs without logprobs", "/v1/chat/completions", `{` + msgs + `,"top_logprobs":2}`, "top_logprobs", "invalid_value"},
		{"top_logprobs range", "/v1/chat/completions", `{` + msgs + `,"logprobs":true,"top_logprobs":21}`, "top_logprobs", "invalid_value"},
		{"logprobs range", "/v1/completions", `{"prompt":"hi","logprobs":-1}`, "logprobs", "invalid_value"},
		{"chat logprobs not bool", "/v1/chat/completions", `{` + msgs + `,"logprobs":3}`, "logprobs", "invalid_type"},
		{"stop five", "/v1/completions", `{"prompt":"hi","stop":["a","b","c","d","e"]}`, "stop", "invalid_value"},
		{"stop empty", "/v1/completions", `{"prompt":"hi","stop":[""]}`, "stop", "invalid_value"},
		{"stop number", "/v1/completions", `{"prompt":"hi","stop":5}`, "stop", "invalid_type"},
		{"stop too long", "/v1/completions", jsonString(map[string]any{"prompt": "hi", "stop": strings.Repeat("x", maxStopBytes+1)}), "stop", "invalid_value"},
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
	neutral := []struct{ name, path, body string }{
		{"response_format text", "/v1/chat/completions", `{` + msgs + `,"response_format":{"type":"text"}}`},
		{"tools empty", "/v1/chat/completions", `{` + msgs + `,"tools":[],"tool_choice":"none"}`},
		{"penalties zero", "/v1/completions", `{"prompt":"hi","frequency_penalty":0,"presence_penalty":0,"logit_bias":{}}`},
		{"user", "/v1/chat/completions", `{` + msgs + `,"user":"u-1","store":false}`},
		{"best_of equal n", "/v1/completions", `{"prompt":"hi","best_of":2,"n":2}`},
		{"stop null", "/v1/completions", `{"prompt":"hi","stop":null}`},
	}
	for _, tt := range neutral {
		t.Run("accepts "+tt.name, func(t *testing.T) {
			if code, body := post(t, url+tt.path, strings.Replace(tt.body, "{", `{"max_tokens":2,`, 1)); code != 200 {
				t.Errorf("status %d: %v", code, body)
			}
		})
	}
}

func TestTokenizeDetokenize(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	ids := func(m map[string]any) []int {
		var out []int
		for _, v := range m["tokens"].([]any) {
			out = append(out, int(v.(float64)))
		}
		return out
	}
	tests := []struct {
		body string
		want []int
	}{
		{`{"content":"hi"}`, []int{'h', 'i'}},
		{`{"content":"hi","add_special":true}`, []int{256, 'h', 'i'}},
		{`{"content":"<|im_end|>"}`, []int{259}},
		{`{"content":"<|im_end|>","parse_special":false}`, []int{'<', '|', 'i', 'm', '_', 'e', 'n', 'd', '|', '>'}},
		{`{"content":""}`, nil},
	}
	for _, tt := range tests {
		code, m := post(t, url+"/tokenize", tt.body)
		if code != 200 || !equalInts(ids(m), tt.want) {
			t.Errorf("tokenize %s: %d %v, want %v", tt.body, code, m, tt.want)
		}
	}
	_, m := post(t, url+"/tokenize", `{"content":"a€","with_pieces":true,"add_special":true}`)
	want := `[{"id":256,"piece":"\u003c|bos|\u003e"},{"id":97,"piece":"a"},{"id":226,"piece":[226]},{"id":130,"piece":[130]},{"id":172,"piece":[172]}]`
	if got := jsonString(m["tokens"]); got != want {
		t.Errorf("with_pieces: %s, want %s", got, want)
	}
	_, m = post(t, url+"/detokenize", `{"tokens":[256,104,105,226,130,172,259]}`)
	if m["content"] != "hi€" {
		t.Errorf("detokenize: %v", m)
	}
	for _, tt := range []struct{ path, body, param, code string }{
		{"/tokenize", `{}`, "content", "missing_required_parameter"},
		{"/tokenize", `{"content":"x","extra":1}`, "extra", "unknown_parameter"},
		{"/detokenize", `{"tokens":[1,999999]}`, "tokens", "invalid_value"},
		{"/detokenize", `{"tokens":"x"}`, "tokens", "invalid_type"},
	} {
		code, m := post(t, url+tt.path, tt.body)
		if code != 400 {
			t.Errorf("%s %s: %d, want 400", tt.path, tt.body, code)
			continue
		}
		checkError(t, m, tt.param, tt.code)
	}
}

func TestHealthAndModelByID(t *testing.T) {
	w := newWorker(t, Config{})
	url := server(t, w)
	for _, tt := range []struct {
		path string
		code int
		has  string
	}{
		{"/health", 200, "ok"},
		{"/healthz", 200, "ok"},
		{"/v1/models/tiny-test", 200, `"id":"tiny-test"`},
		{"/v1/models/gpt-4", 404, `"code":"model_not_found"`},
		{"/v1/models/org/tiny-test", 404, `model_not_found`},
	} {
		resp, err := http.Get(url + tt.path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = fmt.Fprint(&b, readAll(t, resp))
		if resp.StatusCode != tt.code || !strings.Contains(b.String(), tt.has) {
			t.Errorf("GET %s: %d %s, want %d with %s", tt.path, resp.StatusCode, b.String(), tt.code, tt.has)
		}
	}
}

// asJSON is s as a JSON string carries it: each invalid byte a U+FFFD.
func asJSON(s string) string {
	var out string
	if err := json.Unmarshal([]byte(jsonString(s)), &out); err != nil {
		panic(err)
	}
	return out
}
