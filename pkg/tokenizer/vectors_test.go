package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// vocabCase is one llama.cpp tokenizer test case.
type vocabCase struct {
	text string
	ids  []int
}

// readVocabCases parses NAME.gguf.inp (inputs separated by the line
// __ggml_vocab_test__) and NAME.gguf.out (one line of ids per input), as
// llama.cpp's tests/test-tokenizer-0 does.
func readVocabCases(t *testing.T, base string) []vocabCase {
	t.Helper()
	inp, err := os.ReadFile(base + ".inp")
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatal(err)
	}
	texts := strings.Split(string(inp), "\n__ggml_vocab_test__\n")
	if texts[len(texts)-1] == "" {
		texts = texts[:len(texts)-1]
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(lines) != len(texts) {
		t.Fatalf("%s: %d inputs, %d outputs", base, len(texts), len(lines))
	}
	cases := make([]vocabCase, len(texts))
	for i, l := range lines {
		cases[i].text = texts[i]
		for _, f := range strings.Fields(l) {
			id, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("%s line %d: %v", base, i+1, err)
			}
			cases[i].ids = append(cases[i].ids, id)
		}
	}
	return cases
}

// runVocabCases encodes each case as llama.cpp's test does (add_special
// false, parse_special false: Encode) and decodes the expected ids back.
func runVocabCases(t *testing.T, tok Tokenizer, cases []vocabCase) (enc, dec int) {
	t.Helper()
	for i, c := range cases {
		if got := tok.Encode(c.text); reflect.DeepEqual(got, c.ids) || (len(got) == 0 && len(c.ids) == 0) {
			enc++
		} else {
			t.Errorf("case %d Encode(%q)\n got  %v\n want %v", i, c.text, got, c.ids)
		}
		if got := tok.Decode(c.ids); got == c.text {
			dec++
		} else {
			t.Errorf("case %d Decode(%v) = %q, want %q", i, c.ids, got, c.text)
		}
	}
	return enc, dec
}

// TestLlamaCppVocabs runs every vocabulary of testdata/llama-vocab against
// its llama.cpp cases: all must pass, encode and decode.
func TestLlamaCppVocabs(t *testing.T) {
	files, err := filepath.Glob("testdata/llama-vocab/ggml-vocab-*.gguf.inp")
	if err != nil || len(files) == 0 {
		t.Fatalf("no vectors: %v", err)
	}
	for _, inp := range files {
		base := strings.TrimSuffix(inp, ".inp")
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(base), "ggml-vocab-"), ".gguf")
		t.Run(name, func(t *testing.T) {
			tok := vectorTokenizer(t, base)
			if tok == nil {
				t.Skipf("%s: no vocabulary here (llama.cpp's snapshot ships only the cases)", name)
			}
			cases := readVocabCases(t, base)
			enc, dec := runVocabCases(t, tok, cases)
			pre := ""
			if b, ok := tok.(*BPE); ok {
				pre = " pre=" + b.PreTokenizer()
			}
			t.Logf("%s%s: encode %d/%d, decode %d/%d", name, pre, enc, len(cases), dec, len(cases))
		})
	}
}

// vectorTokenizer loads base (a .gguf), or returns nil when it is absent.
func vectorTokenizer(t *testing.T, base string) Tokenizer {
	t.Helper()
	if _, err := os.Stat(base); err != nil {
		return nil
	}
	f, err := gguf.Open(base)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestLlama3Vocab runs the llama-bpe cases against Llama 3's published
// vocabulary (encoder.json and vocab.bpe in the directory named by
// KVCACHE_LLAMA3_VOCAB). The vocabulary is not in this repository: it is
// distributed under Meta's Llama licence, and llama.cpp's snapshot does
// not carry its GGUF.
func TestLlama3Vocab(t *testing.T) {
	dir := os.Getenv("KVCACHE_LLAMA3_VOCAB")
	if dir == "" {
		t.Skip("KVCACHE_LLAMA3_VOCAB not set (directory with Llama 3 encoder.json and vocab.bpe)")
	}
	tok := hfBPE(t, dir, "llama-bpe")
	cases := readVocabCases(t, "testdata/llama-vocab/ggml-vocab-llama-bpe.gguf")
	enc, dec := runVocabCases(t, tok, cases)
	t.Logf("llama-bpe pre=%s: encode %d/%d, decode %d/%d", tok.PreTokenizer(), enc, len(cases), dec, len(cases))
}

// hfBPE builds a BPE tokenizer from a Hugging Face style encoder.json
// (token -> id) and vocab.bpe (one merge per line).
func hfBPE(t *testing.T, dir, pre string) *BPE {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "encoder.json"))
	if err != nil {
		t.Fatal(err)
	}
	var enc map[string]int
	if err := json.Unmarshal(raw, &enc); err != nil {
		t.Fatal(err)
	}
	v := Vocab{BOS: -1, EOS: -1, UNK: -1, Pre: pre, Tokens: make([]string, len(enc))}
	for s, id := range enc {
		if id < 0 || id >= len(enc) || v.Tokens[id] != "" {
			t.Fatalf("encoder.json: bad or duplicate id %d", id)
		}
		v.Tokens[id] = s
	}
	raw, err = os.ReadFile(filepath.Join(dir, "vocab.bpe"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if l != "" && !strings.HasPrefix(l, "#version") {
			v.Merges = append(v.Merges, l)
		}
	}
	tok, err := NewBPE(v)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// An unknown tokenizer.ggml.pre fails at load naming it, unless
// AcceptUnknownPre accepts the default rules with a warning.
func TestUnknownPreTokenizer(t *testing.T) {
	bv := bpeVocab()
	kv := map[string]any{
		"tokenizer.ggml.model":  "gpt2",
		"tokenizer.ggml.tokens": bv.Tokens,
		"tokenizer.ggml.merges": bv.Merges,
		"tokenizer.ggml.pre":    "llama-9",
	}
	_, err := FromGGUF(writeTokGGUF(t, kv))
	if !errors.Is(err, ErrUnknownPreTokenizer) || !strings.Contains(err.Error(), `"llama-9"`) {
		t.Fatalf("err = %v, want ErrUnknownPreTokenizer naming llama-9", err)
	}
	var warned []string
	tok, err := FromGGUFOptions(writeTokGGUF(t, kv), Options{AcceptUnknownPre: true, Warn: func(m string) { warned = append(warned, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if b := tok.(*BPE); b.PreTokenizer() != "default" || len(warned) != 1 || !strings.Contains(warned[0], "llama-9") {
		t.Fatalf("pre %q, warnings %q", b.PreTokenizer(), warned)
	}
	kv["tokenizer.ggml.pre"] = "qwen2"
	if tok, err = FromGGUF(writeTokGGUF(t, kv)); err != nil || tok.(*BPE).PreTokenizer() != "qwen2" {
		t.Fatalf("qwen2: %v", err)
	}
}

// FuzzBPERoundTrip: any bytes survive a byte-level BPE vocabulary
// (gpt-2's, from llama.cpp) unchanged, whatever the split rules.
func FuzzBPERoundTrip(f *testing.F) {
	for _, s := range []string{"Hello world", " 12345 x's\n\n\t", "\xff\xfe\x00", "<|endoftext|> ü", "   \r\n  "} {
		f.Add(s)
	}
	gf, err := gguf.Open("testdata/llama-vocab/ggml-vocab-gpt-2.gguf")
	if err != nil {
		f.Fatal(err)
	}
	defer gf.Close()
	base, err := FromGGUF(gf)
	if err != nil {
		f.Fatal(err)
	}
	toks := []*BPE{base.(*BPE)}
	for _, pre := range []string{"llama3", "qwen2", "deepseek-coder", "falcon", "bloom", "tekken", "chameleon", "deepseek-llm", "deepseek-v3"} {
		b := *base.(*BPE)
		p, err := newPreTokenizer(pre)
		if err != nil {
			f.Fatal(err)
		}
		b.pre = p
		toks = append(toks, &b)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tok := range toks {
			if got := tok.Decode(tok.Encode(s)); got != s {
				t.Fatalf("%s: Decode(Encode(%q)) = %q", tok.PreTokenizer(), s, got)
			}
		}
	})
}
