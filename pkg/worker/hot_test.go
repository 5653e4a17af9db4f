package worker

import (
	"context"
	"math"
	"testing"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

const hotB = 16 // block tokens of the hot tier tests

func sameLogits(t *testing.T, what string, got, want [][]float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d logit steps, want %d", what, len(got), len(want))
	}
	for s := range got {
		for i := range got[s] {
			if math.Float32bits(got[s][i]) != math.Float32bits(want[s][i]) {
				t.Fatalf("%s: step %d logit %d = %v, want %v (bit-identical)", what, s, i, got[s][i], want[s][i])
			}
		}
	}
}

// httpTimings posts a greedy completion of prompt (token ids) and returns
// its text, cached tokens and timings.
func httpTimings(t *testing.T, url string, prompt []int, salt string) (string, int, map[string]any) {
	t.Helper()
	body := map[string]any{"prompt": prompt, "max_tokens": 6, "temperature": 0}
	if salt != "" {
		body["cache_salt"] = salt
	}
	code, m := post(t, url+"/v1/completions", jsonString(body))
	if code != 200 {
		t.Fatalf("completion: %d %v", code, m)
	}
	text := m["choices"].([]any)[0].(map[string]any)["text"].(string)
	return text, cachedTokens(t, m), m["timings"].(map[string]any)
}

func num(m map[string]any, k string) int { return int(m[k].(float64)) }

// Over HTTP against a real node: the second request with a prompt's
// prefix imports every block from the tier, at once (no waiting for the
// append), asks the cluster nothing (no fetched bytes, counters and
// timings agree), and answers exactly what the first one did.
func TestHotTierServesARepeatedPrefixOverHTTP(t *testing.T) {
	_, c := startNode(t)
	w := newWorker(t, Config{Cache: c, Codec: kvblock.Int8, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	url := server(t, w)
	system := textPrompt(11, 5*hotB)
	q1 := append(append([]int(nil), system...), textPrompt(12, 9)[1:]...)
	q2 := append(append([]int(nil), system...), textPrompt(13, 9)[1:]...)

	text1, cached, tm := httpTimings(t, url, q1, "")
	if cached != 0 || num(tm, "hot_cache_blocks") != 0 {
		t.Fatalf("first request: %d cached, timings %v", cached, tm)
	}
	fetchedBefore := metricValue(t, w, "kvcache_worker_fetched_bytes_total", "")
	hitsBefore := metricValue(t, w, "kvcache_worker_hot_cache_hit_blocks_total", "")
	// The same prompt again: the tier holds all of it, exact (computed
	// here), so even with int8 in the cluster the answer is identical.
	text, cached, tm := httpTimings(t, url, q1, "")
	if want := len(q1) / hotB; num(tm, "hot_cache_blocks") != want || num(tm, "fetched_blocks") != 0 || num(tm, "fetched_bytes") != 0 {
		t.Fatalf("repeat: timings %v, want %d hot blocks and nothing fetched", tm, want)
	}
	if cached != len(q1)/hotB*hotB || num(tm, "hot_cache_tokens") != cached {
		t.Fatalf("repeat: %d cached, timings %v", cached, tm)
	}
	if text != text1 {
		t.Fatalf("repeat answered %q, first %q", text, text1)
	}
	// Another question after the same system prompt: its 5 blocks.
	_, cached, tm = httpTimings(t, url, q2, "")
	if num(tm, "hot_cache_blocks") != 5 || cached != 5*hotB || num(tm, "fetched_bytes") != 0 {
		t.Fatalf("shared prefix: %d cached, timings %v", cached, tm)
	}
	if got := metricValue(t, w, "kvcache_worker_fetched_bytes_total", ""); got != fetchedBefore {
		t.Errorf("fetched bytes went from %v to %v on tier hits", fetchedBefore, got)
	}
	if got := metricValue(t, w, "kvcache_worker_hot_cache_hit_blocks_total", ""); got != hitsBefore+float64(len(q1)/hotB+5) {
		t.Errorf("hit blocks %v, want %v", got, hitsBefore+float64(len(q1)/hotB+5))
	}
	if got := metricValue(t, w, "kvcache_worker_hot_cache_miss_blocks_total", ""); got != float64(len(q1)/hotB+len(q2)/hotB-5) {
		t.Errorf("miss blocks %v, want %v", got, len(q1)/hotB+len(q2)/hotB-5)
	}
	if got := metricValue(t, w, "kvcache_worker_hot_cache_bytes", ""); got <= 0 || got > 64<<20 {
		t.Errorf("resident bytes %v", got)
	}
}

// Tier hits are bit-identical to a miss (f16), whichever way the blocks
// got there: fetched from the cluster, computed here, or the tier's
// prefix plus the rest fetched after it (FetchRawAfter).
func TestHotTierHitIsBitIdentical(t *testing.T) {
	_, c := startNode(t)
	plain := newWorker(t, Config{BlockTokens: hotB})
	filler := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB})
	w := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	long := textPrompt(21, 7*hotB+3)
	req := func(p []int) Request { return Request{Prompt: p, MaxTokens: 12} }
	want, wantLogits := run(t, plain, req(long))

	// The cluster has all 7 blocks (computed by another worker); this
	// worker's tier has the first 2 (from a shorter prompt it computed
	// when the cluster had nothing).
	short := long[:2*hotB+1]
	if res, _ := run(t, w, req(short)); res.CachedTokens != 0 {
		t.Fatalf("short prompt had %d cached", res.CachedTokens)
	}
	flush(t, w)
	run(t, filler, req(long))
	flush(t, filler)

	steps := []struct {
		name               string
		hot, fetched, from int
	}{
		{"tier prefix, rest fetched after it", 2, 5, 0},
		{"all from the tier", 7, 0, 0},
	}
	for _, s := range steps {
		res, logits := run(t, w, req(long))
		if res.Timings.HotBlocks != s.hot || res.Timings.FetchedBlocks != s.fetched {
			t.Fatalf("%s: %d hot, %d fetched blocks; want %d, %d", s.name, res.Timings.HotBlocks, res.Timings.FetchedBlocks, s.hot, s.fetched)
		}
		if res.CachedTokens != 7*hotB || res.Timings.HotTokens != s.hot*hotB {
			t.Fatalf("%s: %d cached, %d hot tokens", s.name, res.CachedTokens, res.Timings.HotTokens)
		}
		if !equalInts(res.Tokens, want.Tokens) {
			t.Fatalf("%s: tokens %v, want %v", s.name, res.Tokens, want.Tokens)
		}
		sameLogits(t, s.name, logits, wantLogits)
	}

	// A prompt ending on a block boundary, fully in the tier: the last
	// token is recomputed, from the tier's blocks.
	exact := long[:4*hotB]
	wantE, wantELogits := run(t, plain, req(exact))
	res, logits := run(t, w, req(exact))
	if res.Timings.HotBlocks != 4 || res.Timings.HotTokens != 4*hotB-1 || res.Timings.PrefillTokens != 1 {
		t.Fatalf("exact blocks: timings %+v", res.Timings)
	}
	if !equalInts(res.Tokens, wantE.Tokens) {
		t.Fatalf("exact blocks: tokens %v, want %v", res.Tokens, wantE.Tokens)
	}
	sameLogits(t, "exact blocks", logits, wantELogits)
}

// With the cache node gone the tier still serves what it holds, and a
// prompt that goes beyond it recomputes the rest: never an error.
func TestHotTierServesWhileTheNodeIsDown(t *testing.T) {
	n, c := startNode(t)
	w := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	url := server(t, w)
	p := textPrompt(31, 4*hotB+5)
	text1, _, _ := httpTimings(t, url, p, "")
	flush(t, w)
	n.Stop(t)

	text, cached, tm := httpTimings(t, url, p, "")
	if num(tm, "hot_cache_blocks") != 4 || cached != 4*hotB || text != text1 {
		t.Fatalf("node down: %d cached, %q (want %q), timings %v", cached, text, text1, tm)
	}
	longer := append(append([]int(nil), p...), textPrompt(32, 3*hotB)[1:]...)
	_, cached, tm = httpTimings(t, url, longer, "")
	if num(tm, "hot_cache_blocks") != 4 || cached != 4*hotB || num(tm, "fetched_blocks") != 0 {
		t.Fatalf("node down, longer prompt: %d cached, timings %v", cached, tm)
	}
}

// The same tokens under two namespaces (cache_salt over HTTP; tenants
// are the same mechanism) share nothing in the tier: the second
// namespace's first request is a full miss, in the tier and the cluster.
func TestHotTierIsolatesNamespaces(t *testing.T) {
	_, c := startNode(t)
	w := newWorker(t, Config{Cache: c, Codec: kvblock.F16, BlockTokens: hotB, HotCacheBytes: 64 << 20})
	url := server(t, w)
	p := textPrompt(41, 3*hotB+2)
	if _, cached, _ := httpTimings(t, url, p, "alice"); cached != 0 {
		t.Fatalf("alice's first request had %d cached", cached)
	}
	if _, cached, tm := httpTimings(t, url, p, "alice"); num(tm, "hot_cache_blocks") != 3 || cached != 3*hotB {
		t.Fatalf("alice's repeat: %d cached, timings %v", cached, tm)
	}
	if _, cached, tm := httpTimings(t, url, p, "bob"); cached != 0 || num(tm, "hot_cache_blocks") != 0 {
		t.Fatalf("bob was served alice's blocks: %d cached, timings %v", cached, tm)
	}
	if _, cached, tm := httpTimings(t, url, p, ""); cached != 0 || num(tm, "hot_cache_blocks") != 0 {
		t.Fatalf("the unsalted namespace was served alice's blocks: %d cached, timings %v", cached, tm)
	}
	// And the keys themselves: alice's namespace holds them, bob's not.
	keys := prefix.BlockKeys(w.namespaceFor(Isolation("", "alice")), toU32(p[:3*hotB]), hotB)
	for _, iso := range []string{Isolation("", "bob"), ""} {
		if w.hot.c.Contains(hotKey{w.namespaceFor(iso), keys[0]}) {
			t.Fatalf("alice's key is held under namespace %q", iso)
		}
	}
	if !w.hot.c.Contains(hotKey{w.namespaceFor(Isolation("", "alice")), keys[0]}) {
		t.Fatal("alice's block is not in the tier")
	}
}

// A budget of a few blocks is never exceeded; older prefixes are evicted
// (counted) and requests keep working; a TTL drops blocks on age.
func TestHotTierBudget(t *testing.T) {
	m := tinyModel(t)
	// An f16 block (what the tier keeps of computed KV) and a generous
	// allowance for the per-entry overhead: 5 fit, 6 do not.
	perBlock := int64(m.KVBytesPerToken()*hotB+kvblock.HeaderSize) + 400
	budget := 5 * perBlock
	w := newWorker(t, Config{BlockTokens: hotB, HotCacheBytes: budget}) // no cluster: a local prompt cache
	ctx := context.Background()
	for i := range 6 {
		res, err := w.Generate(ctx, Request{Prompt: textPrompt(50+i, 3*hotB+1), MaxTokens: 1})
		if err != nil {
			t.Fatal(err)
		}
		if res.CachedTokens != 0 {
			t.Fatalf("prompt %d: %d cached", i, res.CachedTokens)
		}
		if got := metricValue(t, w, "kvcache_worker_hot_cache_bytes", ""); got > float64(budget) {
			t.Fatalf("after prompt %d: %v bytes resident, budget %d", i, got, budget)
		}
	}
	if got := metricValue(t, w, "kvcache_worker_hot_cache_evicted_blocks_total", ""); got < 18-5 {
		t.Fatalf("%v evictions, want at least 13 (18 blocks through a 5-block budget)", got)
	}
	if got := metricValue(t, w, "kvcache_worker_hot_cache_capacity_bytes", ""); got != float64(budget) {
		t.Fatalf("capacity %v, want %d", got, budget)
	}
	// The most recent prompt is still there; the first is gone.
	last, _ := w.Generate(ctx, Request{Prompt: textPrompt(55, 3*hotB+1), MaxTokens: 1})
	first, _ := w.Generate(ctx, Request{Prompt: textPrompt(50, 3*hotB+1), MaxTokens: 1})
	if last.Timings.HotBlocks != 3 || first.Timings.HotBlocks != 0 {
		t.Fatalf("hot blocks: last prompt %d (want 3), first %d (want 0)", last.Timings.HotBlocks, first.Timings.HotBlocks)
	}

	ttl := newWorker(t, Config{BlockTokens: hotB, HotCacheBytes: budget, HotCacheTTL: 1}) // 1 ns
	for i := range 2 {
		res, err := ttl.Generate(ctx, Request{Prompt: textPrompt(60, 2*hotB+1), MaxTokens: 1})
		if err != nil || res.Timings.HotBlocks != 0 {
			t.Fatalf("ttl request %d: %v, %d hot blocks", i, err, res.Timings.HotBlocks)
		}
	}
	if got := metricValue(t, ttl, "kvcache_worker_hot_cache_expired_blocks_total", ""); got < 1 {
		t.Fatalf("%v expired blocks, want some", got)
	}
}

// Disabled (the Config default), the tier holds nothing and reports zeros.
func TestHotTierDisabled(t *testing.T) {
	w := newWorker(t, Config{BlockTokens: hotB})
	p := textPrompt(70, 2*hotB+1)
	for i := range 2 {
		res, err := w.Generate(context.Background(), Request{Prompt: p, MaxTokens: 1})
		if err != nil || res.CachedTokens != 0 || res.Timings.HotBlocks != 0 {
			t.Fatalf("request %d: %v, %+v", i, err, res.Timings)
		}
	}
	for _, name := range []string{"kvcache_worker_hot_cache_bytes", "kvcache_worker_hot_cache_hit_blocks_total", "kvcache_worker_hot_cache_capacity_bytes"} {
		if got := metricValue(t, w, name, ""); got != 0 {
			t.Errorf("%s = %v, want 0", name, got)
		}
	}
}

// The blocks keepComputed puts in the tier (f16 words straight from the
// sequence, kvblock.EncodeHalf) are byte for byte what encoding the
// exported float32 KV with the f16 codec gives.
func TestKeepComputedMatchesEncode(t *testing.T) {
	w := newWorker(t, Config{HotCacheBytes: 64 << 20, BlockTokens: hotB})
	seq := w.cfg.Model.NewSequence(hotB)
	tokens := textPrompt(3, 3*hotB+5)
	if _, err := seq.Prefill(context.Background(), tokens); err != nil {
		t.Fatal(err)
	}
	w.hot.keepComputed(w.ns, seq, w.shape, tokens, 1, 3)
	keys := prefix.BlockKeys(w.ns, toU32(tokens[:3*hotB]), hotB)
	n := w.shape.Elements()
	kv := kvblock.KV{Shape: w.shape, K: make([]float32, n), V: make([]float32, n)}
	for i := range 3 {
		b, ok := w.hot.c.Get(hotKey{w.ns, keys[i]})
		if ok != (i >= 1) {
			t.Fatalf("block %d in the tier: %v", i, ok)
		}
		if !ok {
			continue
		}
		if err := seq.ExportBlock(i, kv.K, kv.V); err != nil {
			t.Fatal(err)
		}
		m := kvblock.Meta{Codec: kvblock.F16, StartPos: uint32(i * hotB), RoPE: true, Sinks: -1, Parent: keys[i-1], HasParent: true}
		want, err := kvblock.Encode(nil, &kv, m)
		if err != nil {
			t.Fatal(err)
		}
		if string(b.data) != string(want) {
			t.Fatalf("block %d differs from Encode's", i)
		}
		if h, err := kvblock.Inspect(b.data); err != nil || h != b.hdr {
			t.Fatalf("block %d: header %+v (%v), stored %+v", i, h, err, b.hdr)
		}
	}
}
