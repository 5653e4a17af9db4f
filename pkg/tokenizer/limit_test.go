package tokenizer

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// limitTokenizers are one of each kind: Bytes, SentencePiece, byte-level
// BPE with a multi-stage pre-tokenizer ("default" has four patterns).
func limitTokenizers(t *testing.T) map[string]Tokenizer {
	t.Helper()
	spm, err := NewSPM(spmVocab())
	if err != nil {
		t.Fatal(err)
	}
	bv := bpeVocab()
	bv.Pre = "default"
	bpe, err := NewBPE(bv)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Tokenizer{"bytes": Bytes{}, "spm": spm, "bpe": bpe}
}

// A bounded encoding is the unbounded one whenever it fits: it succeeds
// exactly when the limit is at least the number of tokens, with the same
// ids, and fails with ErrTooManyTokens one token short.
func TestEncodeLimitedMatchesEncode(t *testing.T) {
	texts := []string{"hello world", "hello  world, 123 hello\nworld!", " ab ba hello <|user|> world<|im_start|>x", "Grüße \xff 世界"}
	for name, tok := range limitTokenizers(t) {
		for _, text := range texts {
			for _, special := range []bool{false, true} {
				want, enc := tok.Encode(text), EncodeLimited
				if special {
					want, enc = tok.EncodeSpecial(text), EncodeSpecialLimited
				}
				for _, n := range []int{NoLimit, len(want), len(want) + 5} {
					got, err := enc(context.Background(), tok, text, n)
					if err != nil || !reflect.DeepEqual(got, want) {
						t.Errorf("%s special=%v %q limit %d: %v, %v; want %v", name, special, text, n, got, err, want)
					}
				}
				for _, n := range []int{len(want) - 1, 0} {
					if _, err := enc(context.Background(), tok, text, n); !errors.Is(err, ErrTooManyTokens) {
						t.Errorf("%s special=%v %q: %d tokens under limit %d: err %v, want ErrTooManyTokens", name, special, text, len(want), n, err)
					}
				}
			}
		}
	}
}

// An oversized text costs work proportional to the limit, not to the
// text: eight times the text, the same pieces of work and at most
// limit+1 tokens produced (SentencePiece refuses the run by its length
// before merging anything).
func TestEncodeLimitedStopsEarly(t *testing.T) {
	const max = 100
	for name, tok := range limitTokenizers(t) {
		work := func(words int) (pieces, tokens int) {
			text := strings.Repeat("hello world, ab ", words)
			l := newLimit(context.Background(), max)
			ids, err := encodeLimited(tok, text, true, l)
			if !errors.Is(err, ErrTooManyTokens) || len(ids) != l.tokens {
				t.Fatalf("%s: %d words under a %d-token limit: err %v, %d ids for %d tokens counted", name, words, max, err, len(ids), l.tokens)
			}
			return l.pieces, l.tokens
		}
		p1, t1 := work(10_000)
		p8, t8 := work(80_000)
		t.Logf("%s: limit %d: %d words: %d pieces %d tokens; %d words: %d pieces %d tokens", name, max, 10_000, p1, t1, 80_000, p8, t8)
		if p8 != p1 || t8 != t1 {
			t.Errorf("%s: 8x the text: pieces %d -> %d, tokens %d -> %d: the work grew with the text", name, p1, p8, t1, t8)
		}
		if t8 > max+4 { // the last word may bring a few tokens at once
			t.Errorf("%s: %d tokens produced under a %d-token limit", name, t8, max)
		}
		if p8 > 20*max {
			t.Errorf("%s: %d pieces of work for a %d-token limit", name, p8, max)
		}
	}
}

// A SentencePiece run that its length does not rule out is merged
// whole, which costs at most a run of (limit+1) * longest-token bytes; its
// ids past the limit are not even collected.
func TestEncodeLimitedSPMRun(t *testing.T) {
	spm, err := NewSPM(spmVocab())
	if err != nil {
		t.Fatal(err)
	}
	const max = 100
	text := strings.Repeat("ab", 3*max) // 300 tokens "ab", too few bytes for the length bound
	l := newLimit(context.Background(), max)
	ids, err := encodeLimited(spm, text, false, l)
	if !errors.Is(err, ErrTooManyTokens) {
		t.Fatalf("%d tokens under a %d limit: err %v", len(spm.Encode(text)), max, err)
	}
	t.Logf("run of %d bytes: %d symbols merged, %d ids collected, limit %d (at most %d bytes a token)", len(text), l.pieces, len(ids), max, spm.runBytes)
	if len(ids) > max+1 || l.pieces > (max+1)*spm.runBytes {
		t.Errorf("%d ids collected and %d symbols merged under a %d-token limit", len(ids), l.pieces, max)
	}
}

// A done context stops the encoding at the next piece, with an error
// wrapping the context's.
func TestEncodeLimitedCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	text := strings.Repeat("hello world, ab ", 50_000)
	for name, tok := range limitTokenizers(t) {
		l := newLimit(ctx, NoLimit)
		ids, err := encodeLimited(tok, text, false, l)
		if !errors.Is(err, context.Canceled) || len(ids) != 0 {
			t.Errorf("%s: cancelled: %d ids, err %v; want context.Canceled", name, len(ids), err)
		}
		if l.pieces > 8 || l.tokens > 0 {
			t.Errorf("%s: cancelled before the start, yet %d pieces and %d tokens", name, l.pieces, l.tokens)
		}
	}
}

// A context cancelled part-way stops the encoding there. The package's
// tokenizers check it before each word: cancelled from within after the
// 50th word, the BPE encodes no further word. Tokenizers of other
// packages are encoded whole, and the error comes after.
func TestEncodeLimitedCancelledPartWay(t *testing.T) {
	bv := bpeVocab()
	bv.Pre = "gpt-2"
	bpe, err := NewBPE(bv)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("hello world ", 10_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l := newLimit(ctx, NoLimit)
	words := 0
	bpe.pre.each(text, l, func(w string) bool {
		words++
		if words == 50 {
			cancel()
		}
		return l.ok()
	})
	if words != 50 || !errors.Is(l.err, context.Canceled) {
		t.Errorf("cancelled at word 50, yet %d words taken (err %v)", words, l.err)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	foreign := &cancelling{Tokenizer: bpe, cancel: cancel}
	if ids, err := EncodeLimited(ctx, foreign, text, NoLimit); !errors.Is(err, context.Canceled) {
		t.Errorf("another package's tokenizer, cancelled while encoding: %d ids, err %v", len(ids), err)
	}
}

// cancelling is a Tokenizer of "another package" (no bounded encoding of
// its own) that cancels a context while encoding.
type cancelling struct {
	Tokenizer
	cancel func()
}

func (c *cancelling) Encode(text string) []int {
	c.cancel()
	return c.Tokenizer.Encode(text)
}

// EncodeChatLimited stops a chat of many messages as early as a plain
// text: the work does not grow with the messages past the limit, and a
// chat that fits gives EncodeChat's ids.
func TestEncodeChatLimited(t *testing.T) {
	v, _ := chatVocab()
	tok, err := NewBPE(v)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func(n int) []Message {
		m := make([]Message, n)
		for i := range m {
			m[i] = Message{"user", fmt.Sprintf("m%d <|im_end|>", i)}
		}
		return m
	}
	for _, tmpl := range []Template{ChatML{}, Llama3{}, loadTemplate(t, "qwen2.5.jinja", "", "")} {
		small := msgs(3)
		want, err := EncodeChat(tok, tmpl, small, true)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := EncodeChatLimited(context.Background(), tok, tmpl, small, true, len(want)); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: limit %d: %v %v, want %v", tmpl.Name(), len(want), got, err, want)
		}
		if _, err := EncodeChatLimited(context.Background(), tok, tmpl, small, true, len(want)-1); !errors.Is(err, ErrTooManyTokens) {
			t.Errorf("%s: %d ids under limit %d: err %v", tmpl.Name(), len(want), len(want)-1, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := EncodeChatLimited(ctx, tok, tmpl, small, true, NoLimit); !errors.Is(err, context.Canceled) {
			t.Errorf("%s: cancelled: err %v", tmpl.Name(), err)
		}
	}
}
