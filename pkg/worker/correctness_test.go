package worker

import (
	"context"
	"math"
	"testing"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
)

// With the lossless f16 codec a cache hit must change nothing: the same
// tokens and bit-identical logits at every step, because the engine's
// arithmetic for a token does not depend on how the prompt was split
// between fetched and computed parts.
func TestF16HitIsBitIdentical(t *testing.T) {
	cfg := model.TinyConfig()
	cfg.CLA = true
	cla, err := model.Synthetic("tiny-cla", cfg, 42)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*model.Model{tinyModel(t), cla} {
		t.Run(m.Name(), func(t *testing.T) { testF16HitIsBitIdentical(t, m) })
	}
}

func testF16HitIsBitIdentical(t *testing.T, m *model.Model) {
	const b = 16
	_, c := startNode(t)
	cached := newWorker(t, Config{Model: m, Cache: c, Codec: kvblock.F16, BlockTokens: b})
	plain := newWorker(t, Config{Model: m, BlockTokens: b})

	tests := []struct {
		name   string
		prompt []int
		temp   float64
	}{
		{"one block and a token", textPrompt(1, b+1), 0},
		{"exact blocks", textPrompt(2, 4*b), 0},
		{"long greedy", textPrompt(3, 300), 0},
		{"long sampled", textPrompt(4, 250), 0.8},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{Prompt: tt.prompt, MaxTokens: 24, Temperature: tt.temp, TopP: 0.95, Seed: 7}
			want, wantLogits := run(t, plain, req)
			miss, missLogits := run(t, cached, req)
			if miss.CachedTokens != 0 {
				t.Fatalf("first request had %d cached tokens, want 0", miss.CachedTokens)
			}
			flush(t, cached)
			hit, hitLogits := run(t, cached, req)
			// Every full block is fetched; a full hit then recomputes
			// only the last token (restore drops its imported KV).
			wantBlocks := len(tt.prompt) / b
			if hit.Timings.FetchedBlocks != wantBlocks {
				t.Fatalf("fetched %d blocks, want %d", hit.Timings.FetchedBlocks, wantBlocks)
			}
			if wantCached := min(wantBlocks*b, len(tt.prompt)-1); hit.CachedTokens != wantCached {
				t.Fatalf("cached tokens %d, want %d", hit.CachedTokens, wantCached)
			}
			if hit.Timings.PrefillTokens != len(tt.prompt)-hit.CachedTokens {
				t.Errorf("timings disagree with usage: %+v", hit.Timings)
			}
			// f16 blocks hold exactly the KV-producing layers: half as
			// many with cross-layer attention.
			if want := wantBlocks*b*m.KVBytesPerToken() + wantBlocks*kvblock.HeaderSize; hit.Timings.FetchedBytes != want {
				t.Errorf("fetched %d bytes, want %d", hit.Timings.FetchedBytes, want)
			}
			for name, got := range map[string]*Result{"miss": miss, "hit": hit} {
				if !equalInts(got.Tokens, want.Tokens) || got.FinishReason != want.FinishReason {
					t.Errorf("%s: tokens %v (%s), want %v (%s)", name, got.Tokens, got.FinishReason, want.Tokens, want.FinishReason)
				}
			}
			for name, got := range map[string][][]float32{"miss": missLogits, "hit": hitLogits} {
				if len(got) != len(wantLogits) {
					t.Fatalf("%s: %d logit steps, want %d", name, len(got), len(wantLogits))
				}
				for s := range got {
					for i := range got[s] {
						if math.Float32bits(got[s][i]) != math.Float32bits(wantLogits[s][i]) {
							t.Fatalf("%s: step %d logit %d = %v, want %v (bit-identical)", name, s, i, got[s][i], wantLogits[s][i])
						}
					}
				}
			}
		})
	}
}

// quality is the agreement of a lossy-codec hit with the no-cache run.
type quality struct {
	positions, agree int
	cosSum, cosMin   float64
}

func (q quality) agreement() float64 { return float64(q.agree) / float64(q.positions) }
func (q quality) meanCos() float64   { return q.cosSum / float64(q.positions) }

// measureQuality serves prompts from a cache filled with codec and
// compares, teacher-forced on the no-cache greedy continuation, the next
// token choice and the logits at every position. Teacher forcing keeps
// one early flip from turning every later position into a "disagreement".
func measureQuality(t testing.TB, m *model.Model, codec kvblock.Codec, prompts [][]int, steps int) quality {
	t.Helper()
	const b = 16
	ctx := context.Background()
	_, c := startNode(t)
	w := newWorker(t, Config{Model: m, Cache: c, Codec: codec, BlockTokens: b})
	for _, p := range prompts {
		run(t, w, Request{Prompt: p, MaxTokens: 1})
	}
	flush(t, w)
	q := quality{cosMin: 1}
	for _, p := range prompts {
		ref := m.NewSequence(b)
		refLogits, err := ref.Prefill(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		seq := m.NewSequence(b)
		if n := w.restore(ctx, w.ns, seq, p, &Timings{}, nil); n != len(p)/b {
			t.Fatalf("restored %d blocks, want %d", n, len(p)/b)
		}
		logits, err := seq.Prefill(ctx, p[seq.Len():])
		if err != nil {
			t.Fatal(err)
		}
		for s := 0; s < steps; s++ {
			want := model.Argmax(refLogits)
			q.positions++
			if model.Argmax(logits) == want {
				q.agree++
			}
			cs := cosine(logits, refLogits)
			q.cosSum += cs
			q.cosMin = min(q.cosMin, cs)
			if refLogits, err = ref.Decode(ctx, want); err != nil {
				t.Fatal(err)
			}
			if logits, err = seq.Decode(ctx, want); err != nil {
				t.Fatal(err)
			}
		}
	}
	return q
}

// Lossy codecs: int8 must agree with the no-cache run on >= 99% of greedy
// positions with mean logit cosine >= 0.999. int4 and int2 are reported;
// their floors are set below the measured figures (see the t.Log lines)
// with a margin, so they catch a broken codec, not noise.
func TestLossyCodecQuality(t *testing.T) {
	m := tinyModel(t)
	var prompts [][]int
	for i := range 8 {
		prompts = append(prompts, textPrompt(100+i, 120+40*i))
	}
	tests := []struct {
		codec            kvblock.Codec
		minAgree, minCos float64
	}{
		{kvblock.Int8, 0.99, 0.999}, // measured 99.6%, 0.999998
		{kvblock.Int4, 0.85, 0.999}, // measured 92.2%, 0.999613
		{kvblock.Int2, 0.60, 0.97},  // measured 69.5%, 0.987616
	}
	for _, tt := range tests {
		t.Run(tt.codec.String(), func(t *testing.T) {
			q := measureQuality(t, m, tt.codec, prompts, 32)
			t.Logf("%s: greedy agreement %.2f%% over %d positions, mean logit cosine %.6f (min %.6f)",
				tt.codec, 100*q.agreement(), q.positions, q.meanCos(), q.cosMin)
			if q.agreement() < tt.minAgree || q.meanCos() < tt.minCos {
				t.Errorf("%s: agreement %.4f (want >= %.2f), cosine %.6f (want >= %.4f)",
					tt.codec, q.agreement(), tt.minAgree, q.meanCos(), tt.minCos)
			}
		})
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A full hit (the prompt ends on a block boundary and every block is
// cached) imports every block and computes only the prompt's last token,
// not its last block: prefill reports one token, in the Timings and in
// kvcache_worker_prefill_tokens_total, and the result matches the miss.
func TestFullHitPrefillsOneToken(t *testing.T) {
	const b = 16
	_, c := startNode(t)
	w := newWorker(t, Config{Model: tinyModel(t), Cache: c, Codec: kvblock.F16, BlockTokens: b})
	tests := []struct {
		name          string
		prompt        []int
		wantPrefilled int
	}{
		{"one block", textPrompt(11, b), 1},
		{"eight blocks", textPrompt(12, 8*b), 1},
		{"partial last block", textPrompt(13, 8*b+5), 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := Request{Prompt: tt.prompt, MaxTokens: 4}
			miss, _ := run(t, w, req)
			if miss.Timings.PrefillTokens != len(tt.prompt) {
				t.Fatalf("miss prefilled %d tokens, want %d", miss.Timings.PrefillTokens, len(tt.prompt))
			}
			flush(t, w)
			before := metricValue(t, w, "kvcache_worker_prefill_tokens_total", "")
			hit, _ := run(t, w, req)
			after := metricValue(t, w, "kvcache_worker_prefill_tokens_total", "")
			if hit.Timings.FetchedBlocks != len(tt.prompt)/b {
				t.Fatalf("fetched %d blocks, want %d", hit.Timings.FetchedBlocks, len(tt.prompt)/b)
			}
			if hit.Timings.PrefillTokens != tt.wantPrefilled || after-before != float64(tt.wantPrefilled) {
				t.Fatalf("hit prefilled %d tokens (metric +%v), want %d", hit.Timings.PrefillTokens, after-before, tt.wantPrefilled)
			}
			if hit.CachedTokens+hit.Timings.PrefillTokens != len(tt.prompt) {
				t.Errorf("cached %d + prefilled %d != prompt %d", hit.CachedTokens, hit.Timings.PrefillTokens, len(tt.prompt))
			}
			if !equalInts(hit.Tokens, miss.Tokens) {
				t.Errorf("hit tokens %v, miss %v", hit.Tokens, miss.Tokens)
			}
		})
	}
}
