package model

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/gguf"
	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// TestWordTokenizerRoundTrip: any text, valid UTF-8 or not, control
// characters, U+2581 and the control tokens' text included, decodes back
// exactly from its encoding, and common words cost one token.
func TestWordTokenizerRoundTrip(t *testing.T) {
	tok := WordTokenizer()
	if tok.VocabSize() != DefaultConfig().Vocab {
		t.Fatalf("vocab %d, DefaultConfig %d", tok.VocabSize(), DefaultConfig().Vocab)
	}
	cases := []string{
		"", "The quick brown fox", "héllo ▁ wörld\x00\x01\x7f", "\xff\xfe invalid \xc3",
		"日本語のテキスト 🙂", "<|im_start|>user\nhi<|im_end|>", "  two  spaces\t\ttabs\r\n",
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		cases = append(cases, string(b))
		var sb strings.Builder
		for range r.IntN(20) {
			sb.WriteRune(rune(r.IntN(0x10000)))
		}
		cases = append(cases, sb.String())
	}
	for _, s := range cases {
		ids := tok.Encode(s)
		if got := tok.Decode(ids); got != s {
			t.Fatalf("Decode(Encode(%q)) = %q (ids %v)", s, got, ids)
		}
		for _, id := range ids {
			if id == tokenizer.ByteImStart || id == tokenizer.ByteImEnd || id == tokenizer.ByteBOS || id == tokenizer.ByteEOS {
				t.Fatalf("Encode(%q) produced control token %d", s, id)
			}
		}
	}
	if ids := tok.EncodeSpecial("<|im_start|>user"); len(ids) == 0 || ids[0] != tokenizer.ByteImStart {
		t.Fatalf("EncodeSpecial(<|im_start|>user) = %v", ids)
	}
	text := " the water is cold and the river is deep"
	if ids := tok.Encode(text); len(ids) != len(strings.Fields(text)) {
		t.Fatalf("%q: %d tokens, want one per word: %v", text, len(ids), ids)
	}
}

// TestWordVocabOutputPrintable: every token the output projection leaves
// undamped is printable text, so greedy output of the default model is.
func TestWordVocabOutputPrintable(t *testing.T) {
	wv := wordsOnce()
	kept := 0
	for id, ok := range wv.output {
		if !ok {
			continue
		}
		kept++
		b := wv.tok.TokenBytes(id)
		if len(b) == 0 || !utf8.Valid(b) || strings.IndexFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
			t.Fatalf("undamped token %d = %q is not printable text", id, b)
		}
	}
	if kept < 500 {
		t.Fatalf("only %d undamped tokens", kept)
	}
}

// TestWordVocabGGUF: a word-piece model written as GGUF loads back with the
// same tokenizer (and the same logits).
func TestWordVocabGGUF(t *testing.T) {
	wv := wordsOnce()
	cfg := TinyConfig()
	cfg.Vocab = wv.tok.VocabSize()
	m, err := synthetic("tiny-words", cfg, 5, wv.tok, wv.vocab, func(id int) bool { return wv.output[id] }, 4, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := m.WriteGGUF(&buf, gguf.F32); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	text := "Hello there, the model speaks \x01 words ▁ 🙂"
	a, b := m.Tokenizer().Encode(text), got.Tokenizer().Encode(text)
	if !slices.Equal(a, b) || got.Tokenizer().Decode(b) != text {
		t.Fatalf("tokenizer not restored: %v vs %v", a, b)
	}
	if i, ok := sameBits(prefill(t, m.NewSequence(4), a), prefill(t, got.NewSequence(4), b)); !ok {
		t.Fatalf("logits differ at %d", i)
	}
}
