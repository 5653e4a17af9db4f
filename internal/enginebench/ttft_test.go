package enginebench

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// The answers below have the shape of a llama-server /completion answer
// (Feb-2025 snapshot) and of a worker's /v1/completions answer.
const (
	llamaFirst  = `{"content":"x","tokens_evaluated":1024,"tokens_cached":1024,"timings":{"prompt_n":1024,"prompt_ms":900.5,"predicted_n":1,"predicted_ms":0.5}}`
	llamaCached = `{"content":"x","tokens_evaluated":1024,"tokens_cached":1024,"timings":{"prompt_n":1,"prompt_ms":17.5,"predicted_n":1,"predicted_ms":0.3}}`
	workerHit   = `{"id":"c","object":"text_completion","usage":{"prompt_tokens":1024,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":1023}},
		"timings":{"lookup_ms":0.7,"fetch_ms":12,"import_ms":8,"fetched_blocks":64,"fetched_bytes":6541312,"hot_cache_ms":0,"hot_cache_blocks":0,
		"prefill_ms":15,"prefill_tokens":1,"ttft_ms":28}}`
)

func TestParseAnswers(t *testing.T) {
	s, err := parseLlamaCompletion([]byte(llamaCached), 19)
	if err != nil {
		t.Fatal(err)
	}
	if s.WallMS != 19 || s.Computed != 1 || s.Cached != 1023 || s.PrefillMS != 17.5 || s.ServerMS != 17.8 {
		t.Fatalf("llama-server answer parsed as %+v", s)
	}
	w, err := parseWorkerCompletion([]byte(workerHit), 30)
	if err != nil {
		t.Fatal(err)
	}
	if w.Computed != 1 || w.Cached != 1023 || w.Fetched != 64 || w.FetchedMB != 6.541312 || w.ImportMS != 8 || w.ServerMS != 28 || w.PromptToks != 1024 {
		t.Fatalf("worker answer parsed as %+v", w)
	}
	for _, bad := range []string{`{`, `{"content":"x"}`, `[]`} {
		if _, err := parseLlamaCompletion([]byte(bad), 1); err == nil {
			t.Errorf("llama-server answer %q parsed", bad)
		}
	}
	for _, bad := range []string{`{`, `{"usage":{}}`} {
		if _, err := parseWorkerCompletion([]byte(bad), 1); err == nil {
			t.Errorf("worker answer %q parsed", bad)
		}
	}
}

func TestTTFTTable(t *testing.T) {
	llama := func(body string, wall float64) ttftSample {
		s, err := parseLlamaCompletion([]byte(body), wall)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hit := func(wall float64) ttftSample {
		s, err := parseWorkerCompletion([]byte(workerHit), wall)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	r := ttftResults{
		"llama-first":      {llama(llamaFirst, 905)},
		"llama-cached":     {llama(llamaCached, 20), llama(llamaCached, 22), llama(llamaCached, 100)},
		"kv-remote":        {hit(30), hit(33), hit(36)},
		"kv-remote-notier": {hit(24), hit(27)},
	}
	var out bytes.Buffer
	printTTFT(&out, 1024, 3, r, true)
	got := out.String()
	for _, want := range []string{
		"| llama-server, repeated (in-process prompt cache) | 22.0 | 17.8 | 1 | 1023 |",
		"| kvcache worker B, remote full hit (fetch from the cache node) | 33.0 | 28.0 | 1 | 1023 |",
		"lookup 0.7 ms, fetch 12.0 ms for 6.54 MB in 64.0 blocks (of which decode+import 8.0 ms), prefill 15.0 ms",
		"kvcache remote hit / llama-server prompt cache (wall): 1.50x",
		"| kvcache worker C (hot tier off), remote full hit | 25.5 | 28.0 | 1 | 1023 |",
		"remote hit, hot tier off, medians: lookup 0.7 ms, fetch 12.0 ms (of which decode+import 8.0 ms), prefill 15.0 ms",
		"kvcache remote hit (hot tier off) / llama-server prompt cache (wall): 1.16x",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "hot-tier hit |") || strings.Contains(got, "miss (computes") {
		t.Errorf("rows without samples printed:\n%s", got)
	}
	out.Reset()
	printTTFT(&out, 1024, 3, ttftResults{"kv-remote": {hit(30)}}, false)
	if !strings.Contains(out.String(), "llama-server not on PATH") || strings.Contains(out.String(), "prompt cache (wall)") {
		t.Errorf("without llama-server:\n%s", out.String())
	}
}

// Every round's prompt is new (nothing cached before its first request)
// and inside the vocabulary, above the byte tokens.
func TestTTFTPrompts(t *testing.T) {
	a, b := ttftPrompt(1, 0, 1024), ttftPrompt(1, 1, 1024)
	if len(a) != 1024 || a[0] == b[0] && a[1] == b[1] && a[2] == b[2] {
		t.Fatalf("rounds share a prompt start: %v %v", a[:3], b[:3])
	}
	for _, id := range append(a, b...) {
		if id < 259 || id >= BenchConfig().Vocab {
			t.Fatalf("token id %d outside [259, vocab)", id)
		}
	}
}

func TestTTFTFlags(t *testing.T) {
	o, err := parse(&bytes.Buffer{}, []string{"-ttft-tokens", "512", "-ttft-rounds", "2", "-llama-server", "/x/llama-server", "-bin", "/y"})
	if err != nil {
		t.Fatal(err)
	}
	if o.ttftTokens != 512 || o.ttftRounds != 2 || o.llamaServer != "/x/llama-server" || o.bin != "/y" || !o.ttft {
		t.Fatalf("parsed %+v", o)
	}
	for _, args := range [][]string{{"-ttft-tokens", "1"}, {"-ttft-tokens", "4096"}, {"-ttft-rounds", "0"}} {
		if _, err := parse(&bytes.Buffer{}, args); !errors.Is(err, ErrUsage) {
			t.Errorf("%v: err = %v, want ErrUsage", args, err)
		}
	}
}

// Without the kvcache binaries the comparison is skipped with a note,
// not failed.
func TestTTFTSkipsWithoutBinaries(t *testing.T) {
	o, err := parse(&bytes.Buffer{}, []string{"-bin", t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runTTFT(t.Context(), &out, &bytes.Buffer{}, o, "model.gguf", ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "TTFT comparison skipped") {
		t.Fatalf("output %q", out.String())
	}
}
