package worker

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
	"github.com/kvcache/kvcache/pkg/model"
)

// spmModel is the tiny synthetic model with a SentencePiece vocabulary in
// which every ordinary token starts with "▁" (a space), so the first
// generated token always carries the leading space SPM's Decode strips.
func spmModel(t *testing.T) *model.Model {
	t.Helper()
	var buf bytes.Buffer
	if err := tinyModel(t).WriteGGUF(&buf, gguf.F32); err != nil {
		t.Fatal(err)
	}
	src, err := gguf.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	w := gguf.NewWriter()
	for _, k := range src.Keys() {
		if strings.HasPrefix(k, "tokenizer.") {
			continue
		}
		v, _ := src.Value(k)
		if err := w.SetKV(k, v); err != nil {
			t.Fatal(err)
		}
	}
	vocab := model.TinyConfig().Vocab
	tokens := []string{"<unk>", "<s>", "</s>"}
	types := []int32{2, 3, 3} // unknown, control, control
	for i := len(tokens); i < vocab; i++ {
		tokens = append(tokens, fmt.Sprintf("▁t%d", i))
		types = append(types, 1)
	}
	scores := make([]float32, vocab)
	for k, v := range map[string]any{
		"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
		"tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": uint32(1), "tokenizer.ggml.eos_token_id": uint32(2),
		"tokenizer.ggml.unknown_token_id": uint32(0),
	} {
		if err := w.SetKV(k, v); err != nil {
			t.Fatal(err)
		}
	}
	for _, ti := range src.Tensors {
		data, err := src.TensorData(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.AddTensor(ti.Name, gguf.F32, ti.Dims, data); err != nil {
			t.Fatal(err)
		}
	}
	buf.Reset()
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// SentencePiece's Decode strips the leading space of the first token; the
// answer keeps it (as streaming always did, and as llama.cpp answers), so
// whole and streamed text agree byte for byte.
func TestSPMLeadingSpaceKept(t *testing.T) {
	m := spmModel(t)
	w := newWorker(t, Config{Model: m})
	url := server(t, w)
	body := map[string]any{"prompt": []int{1, 5, 6, 7}, "max_tokens": 6, "temperature": 0}
	code, whole := post(t, url+"/v1/completions", jsonString(body))
	if code != 200 {
		t.Fatalf("%d %v", code, whole)
	}
	text := choiceOf(whole, 0)["text"].(string)
	if !strings.HasPrefix(text, " t") {
		t.Fatalf("text %q lost the first token's leading space", text)
	}
	body["stream"] = true
	if s := reassemble(t, sse(t, url+"/v1/completions", jsonString(body)), false); s.text[0] != text {
		t.Errorf("streamed %q, whole %q", s.text[0], text)
	}
	// /detokenize is Decode: it round-trips /tokenize, so it strips it.
	_, tk := post(t, url+"/tokenize", `{"content":"x"}`)
	_, dt := post(t, url+"/detokenize", jsonString(map[string]any{"tokens": []int{5, 6}}))
	if dt["content"] != "t5 t6" {
		t.Errorf("detokenize [5 6] = %v (tokenize x = %v)", dt["content"], tk)
	}
}
