package enginebench

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
	"github.com/kvcache/kvcache/pkg/model"
)

func TestParse(t *testing.T) {
	o, err := parse(&bytes.Buffer{}, []string{"-p", "64, 256", "-quants", "q8_0", "-rounds", "3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.prompts) != 2 || o.prompts[1] != 256 || len(o.quants) != 1 || o.quants[0] != gguf.Q8_0 || o.rounds != 3 {
		t.Fatalf("parsed %+v", o)
	}
	for _, args := range [][]string{{"-p", "x"}, {"-p", "0"}, {"-quants", "Q4_K"}, {"-rounds", "0"}, {"-n", "100000"}, {"-bogus"}} {
		if _, err := parse(&bytes.Buffer{}, args); !errors.Is(err, ErrUsage) {
			t.Errorf("%v: err = %v, want ErrUsage", args, err)
		}
	}
}

// TestLlamaBenchAndTable runs a stand-in llama-bench that prints the JSON
// of the real one, and checks the parsed medians and ratios in the table.
func TestLlamaBenchAndTable(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "llama-bench")
	script := `#!/bin/sh
echo '[{"n_prompt":128,"n_gen":0,"avg_ts":1000.0},{"n_prompt":512,"n_gen":0,"avg_ts":900.0},{"n_prompt":0,"n_gen":128,"avg_ts":150.0}]'
`
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	o, err := parse(&bytes.Buffer{}, []string{"-quants", "F16"})
	if err != nil {
		t.Fatal(err)
	}
	theirs, ours := result{}, result{}
	if err := runLlama(context.Background(), fake, "model.gguf", gguf.F16, o, theirs); err != nil {
		t.Fatal(err)
	}
	for _, v := range []float64{400, 500, 450} {
		ours.add(gguf.F16, "pp128", v)
	}
	ours.add(gguf.F16, "pp512", 600)
	ours.add(gguf.F16, "tg128", 100)
	var out bytes.Buffer
	printTable(&out, o, ours, theirs, true)
	want := "| F16 | prefill 128 / 512 tok/s | 1000 / 900 | 450 / 600 | 2.22x / 1.50x |\n| F16 | decode 128 tok/s | 150 | 100 | 1.50x |"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("table:\n%s\nwant rows:\n%s", out.String(), want)
	}
	// A failing llama-bench is an error naming its output.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("#!/bin/sh\necho 'error: failed to load model' >&2\nexit 1\n"), 0o755)
	if err := runLlama(context.Background(), bad, "m", gguf.F16, o, result{}); err == nil || !strings.Contains(err.Error(), "failed to load model") {
		t.Fatalf("err = %v", err)
	}
}

// TestWithLlamaVocab checks that the vocabulary rewrite keeps the model
// loadable by the engine, with the new tokenizer and the same weights.
func TestWithLlamaVocab(t *testing.T) {
	dir := t.TempDir()
	m, err := model.Synthetic("tiny", model.TinyConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	src, dst := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	fh, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.WriteGGUF(fh, gguf.Q8_0); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	if err := withLlamaVocab(src, dst, model.TinyConfig().Vocab); err != nil {
		t.Fatal(err)
	}
	a, err := model.Load(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := model.Load(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	if b.Tokenizer().VocabSize() != model.TinyConfig().Vocab || a.WeightsDigest() != b.WeightsDigest() {
		t.Fatalf("vocab %d, same weights %v", b.Tokenizer().VocabSize(), a.WeightsDigest() == b.WeightsDigest())
	}
	f, err := gguf.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if s, _ := f.String("tokenizer.ggml.model"); s != "llama" {
		t.Fatalf("tokenizer model %q", s)
	}
}
