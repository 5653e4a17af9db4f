package tokenizer

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
)

func spmVocab() Vocab {
	v := Vocab{BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	add := func(tok string, score float32, typ int32) {
		v.Tokens = append(v.Tokens, tok)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, typ)
	}
	add("<unk>", 0, TypeUnknown)
	add("<s>", 0, TypeControl)
	add("</s>", 0, TypeControl)
	for b := 0; b < 256; b++ {
		add(fmt.Sprintf("<0x%02X>", b), 0, TypeByte)
	}
	for i, p := range []string{"▁", "h", "e", "l", "o", "w", "r", "d", "a", "b"} {
		add(p, -10-float32(i), TypeNormal)
	}
	for _, p := range []struct {
		s     string
		score float32
	}{{"he", -1}, {"ll", -2}, {"llo", -3}, {"hello", -4}, {"▁hello", -5}, {"or", -2}, {"▁w", -3}, {"▁wor", -4}, {"▁world", -5}, {"ld", -6}, {"ab", -1}, {"ba", -1}} {
		add(p.s, p.score, TypeNormal)
	}
	add("<|user|>", 0, TypeControl)
	return v
}

func pieces(t *testing.T, tok interface{ TokenBytes(int) []byte }, names []string, ids []int) []string {
	t.Helper()
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = names[id]
	}
	return out
}

func TestSPM(t *testing.T) {
	v := spmVocab()
	tok, err := NewSPM(v)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		text    string
		special bool
		want    []string
	}{
		{"hello world", false, []string{"▁hello", "▁world"}},
		{"hello", false, []string{"▁hello"}},
		{"é", false, []string{"▁", "<0xC3>", "<0xA9>"}},
		{"aba", false, []string{"▁", "ab", "a"}}, // tie: leftmost pair first
		{"<|user|>hello", true, []string{"<|user|>", "▁hello"}},
		{"<|user|>", false, []string{"▁", "<0x3C>", "<0x7C>", "<0x75>", "<0x73>", "e", "r", "<0x7C>", "<0x3E>"}},
	}
	for _, tc := range tests {
		var ids []int
		if tc.special {
			ids = tok.EncodeSpecial(tc.text)
		} else {
			ids = tok.Encode(tc.text)
		}
		if got := pieces(t, tok, v.Tokens, ids); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Encode(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	for _, s := range []string{"hello world", "héllo wörld ✓", " two  spaces"} {
		if got := tok.Decode(tok.Encode(s)); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
	if got := EncodePrompt(tok, "hello"); got[0] != 1 {
		t.Errorf("EncodePrompt did not add BOS: %v", got)
	}
}

func bpeVocab() Vocab {
	v := Vocab{BOS: -1, EOS: -1, UNK: -1}
	for b := 0; b < 256; b++ {
		v.Tokens = append(v.Tokens, string(byteRune[b]))
	}
	merges := []string{"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"}
	for _, m := range merges {
		v.Tokens = append(v.Tokens, strings.ReplaceAll(m, " ", ""))
	}
	v.Merges = merges
	v.Tokens = append(v.Tokens, "<|im_start|>")
	v.Types = make([]int32, len(v.Tokens))
	for i := range v.Types {
		v.Types[i] = TypeNormal
	}
	v.Types[len(v.Types)-1] = TypeControl
	v.EOS = len(v.Tokens) - 1
	return v
}

func TestBPE(t *testing.T) {
	v := bpeVocab()
	tok, err := NewBPE(v)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		text string
		want []string
	}{
		{"hello world", []string{"hello", "Ġworld"}},
		{"hello\nworld", []string{"hello", "Ċ", "w", "or", "ld"}},
		{"<|im_start|>hello", []string{"<|im_start|>", "hello"}},
	}
	for _, tc := range tests {
		if got := pieces(t, tok, v.Tokens, tok.EncodeSpecial(tc.text)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("EncodeSpecial(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
	if got := tok.Encode("<|im_start|>"); len(got) != len("<|im_start|>") {
		t.Errorf("Encode parsed a special token: %v", got)
	}
	for _, s := range []string{"hello world", "Grüße, 世界! 🙂  \n\t x's 123"} {
		if got := tok.Decode(tok.Encode(s)); got != s {
			t.Errorf("Decode(Encode(%q)) = %q", s, got)
		}
	}
}

func TestPreTokenize(t *testing.T) {
	tests := []struct {
		pre  string
		in   string
		want []string
	}{
		{"gpt-2", "Hello world", []string{"Hello", " world"}},
		{"gpt-2", "it's 42!", []string{"it", "'s", " 42", "!"}},
		{"gpt-2", "a  b", []string{"a", " ", " b"}},
		{"gpt-2", "a\n\nb", []string{"a", "\n", "\n", "b"}},
		{"gpt-2", "end  ", []string{"end", "  "}},
		{"gpt-2", "x??y", []string{"x", "??", "y"}},
		{"gpt-2", "I'LL go", []string{"I", "'", "LL", " go"}}, // GPT-2 contractions are lower case only
		{"llama3", "I'LL go", []string{"I", "'LL", " go"}},
		{"llama3", "12345", []string{"123", "45"}},
		{"llama3", "a \n\nb", []string{"a", " \n\n", "b"}},
		{"qwen2", "12345", []string{"1", "2", "3", "4", "5"}},
		{"starcoder", " 123 x", []string{" ", "1", "2", "3", " x"}},
		{"falcon", "1234567", []string{"123", "456", "7"}},
		{"falcon", "a.b", []string{"a", ".", "b"}},
		{"deepseek-coder", "ab\ncd 12", []string{"ab", "\n", "cd", " ", "1", "2"}},
		{"gpt-2", "bad \xff\xfe utf8", []string{"bad", " \xff\xfe", " utf", "8"}},
		{"default", "", nil},
	}
	for _, tc := range tests {
		p, err := newPreTokenizer(tc.pre)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.split(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s split(%q) = %q, want %q", tc.pre, tc.in, got, tc.want)
		}
	}
	for _, name := range PreTokenizers() {
		if _, err := newPreTokenizer(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := newPreTokenizer("qwen9000"); !errors.Is(err, ErrUnknownPreTokenizer) || !strings.Contains(err.Error(), "qwen9000") {
		t.Errorf("unknown name: err = %v", err)
	}
}

func TestBytes(t *testing.T) {
	var b Bytes
	s := "hi ✓"
	if got := b.Decode(b.Encode(s)); got != s {
		t.Fatalf("round trip = %q", got)
	}
	ids := EncodePrompt(b, ChatML{}.Apply([]Message{{"user", "hi"}}, true))
	want := append([]int{ByteBOS, ByteImStart}, b.Encode("user\nhi")...)
	want = append(append(want, ByteImEnd), b.Encode("\n")...)
	want = append(append(want, ByteImStart), b.Encode("assistant\n")...)
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("chat prompt ids = %v, want %v", ids, want)
	}
	if got := b.Encode("<|im_end|>"); len(got) != 10 {
		t.Fatalf("Encode parsed special: %v", got)
	}
}

func writeTokGGUF(t *testing.T, kv map[string]any) *gguf.File {
	t.Helper()
	w := gguf.NewWriter()
	for k, v := range kv {
		if err := w.SetKV(k, v); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFromGGUF(t *testing.T) {
	sv := spmVocab()
	f := writeTokGGUF(t, map[string]any{
		"tokenizer.ggml.model":        "llama",
		"tokenizer.ggml.tokens":       sv.Tokens,
		"tokenizer.ggml.scores":       sv.Scores,
		"tokenizer.ggml.token_type":   sv.Types,
		"tokenizer.ggml.bos_token_id": uint32(1),
		"tokenizer.ggml.eos_token_id": uint32(2),
	})
	tok, err := FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := NewSPM(sv)
	if !reflect.DeepEqual(tok.Encode("hello world"), ref.Encode("hello world")) || tok.BOS() != 1 || tok.EOS() != 2 || !tok.AddBOS() {
		t.Fatal("SPM from GGUF differs")
	}

	bv := bpeVocab()
	f = writeTokGGUF(t, map[string]any{
		"tokenizer.ggml.model":  "gpt2",
		"tokenizer.ggml.tokens": bv.Tokens,
		"tokenizer.ggml.merges": bv.Merges,
	})
	if tok, err = FromGGUF(f); err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("hello world"); len(got) != 2 || tok.AddBOS() {
		t.Fatalf("BPE from GGUF: %v", got)
	}

	bad := []struct {
		name string
		kv   map[string]any
		want error
	}{
		{"no model", map[string]any{"x": "y"}, ErrInvalid},
		{"unknown model", map[string]any{"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": []string{"a"}}, ErrUnsupported},
		{"no tokens", map[string]any{"tokenizer.ggml.model": "llama"}, ErrInvalid},
		{"bos out of range", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []string{"a"}, "tokenizer.ggml.bos_token_id": uint32(9)}, ErrInvalid},
		{"score count", map[string]any{"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": []string{"a"}, "tokenizer.ggml.scores": []float32{1, 2}}, ErrInvalid},
		{"bad merge", map[string]any{"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": []string{"a"}, "tokenizer.ggml.merges": []string{"ab"}}, ErrInvalid},
	}
	for _, tc := range bad {
		if _, err := FromGGUF(writeTokGGUF(t, tc.kv)); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestTemplates(t *testing.T) {
	msgs := []Message{{"system", "Be brief."}, {"user", "Hi"}}
	tests := []struct {
		src  string
		name string
		want string
	}{
		{"{% ... '<|start_header_id|>' + message['role'] ... %}", "llama3",
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"{{'<|im_start|>' + message['role'] + '\\n'}}", "chatml",
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"", "plain", "system: Be brief.\nuser: Hi\nassistant:"},
	}
	for _, tc := range tests {
		tpl := DetectTemplate(tc.src)
		if tpl.Name() != tc.name {
			t.Errorf("DetectTemplate = %s, want %s", tpl.Name(), tc.name)
			continue
		}
		if got, _ := tpl.Render(msgs, true); got != tc.want {
			t.Errorf("%s: Apply = %q, want %q", tc.name, got, tc.want)
		}
	}
}
