package tokenizer

import (
	"encoding/json"
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
