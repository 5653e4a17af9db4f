// Package enginebench measures prefill and decode speed of the project's
// engine (pkg/model) on a random-weight Llama GGUF (dim 768, 12 layers,
// 12 heads / 4 KV heads, FFN 2048, vocab 32000: about 125M parameters),
// written with the project's own GGUF writer in F16 and Q8_0, and runs
// llama.cpp's llama-bench on the same files when it is on PATH. Rounds
// alternate between the two engines and the table reports medians and the
// ratio, because on a shared machine only same-run ratios mean anything.
package enginebench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kvcache/kvcache/pkg/gguf"
	"github.com/kvcache/kvcache/pkg/model"
)

// ErrUsage means the command line was wrong.
var ErrUsage = errors.New("usage")

// BenchConfig is the benchmark model's shape (the llama.cpp comparison of
// issue 13).
func BenchConfig() model.Config {
	return model.Config{
		Layers: 12, Dim: 768, Heads: 12, KVHeads: 4, HeadDim: 64, FFNDim: 2048,
		Vocab: 32000, RopeTheta: 10000, NormEps: 1e-5, ContextLen: 4096,
	}
}

// options are the command-line settings.
type options struct {
	dir        string
	rounds     int
	threads    int
	prompts    []int
	gen        int
	quants     []gguf.TensorType
	llamaBench string
	rssOf      string // internal: load this file, print RSS, exit
	rssHeap    bool
	cpuProfile string
	rss        bool
	// The TTFT comparison (ttft.go).
	ttft        bool
	ttftTokens  int
	ttftRounds  int
	llamaServer string
	bin         string // holds cachenode and worker
}

// result is tokens per second for one engine, quant and metric.
type result map[string][]float64 // key: quant + "/" + metric

func (r result) add(q gguf.TensorType, metric string, v float64) {
	k := q.String() + "/" + metric
	r[k] = append(r[k], v)
}

func (r result) median(q gguf.TensorType, metric string) float64 {
	v := slices.Clone(r[q.String()+"/"+metric])
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	return v[len(v)/2]
}

// Main runs the benchmark with command-line args.
func Main(ctx context.Context, stdout, stderr io.Writer, args []string) error {
	o, err := parse(stderr, args)
	if err != nil {
		return err
	}
	runtime.GOMAXPROCS(o.threads)
	if o.rssOf != "" {
		return printRSS(ctx, stdout, o.rssOf, o.rssHeap)
	}
	fmt.Fprintf(stdout, "engine kernels: %s; %d threads; %d alternating rounds, medians\n", model.KernelName(), o.threads, o.rounds)
	paths := map[gguf.TensorType]string{}
	for _, q := range o.quants {
		p, err := ensureModel(o.dir, q, stderr)
		if err != nil {
			return err
		}
		paths[q] = p
	}
	ours, theirs := result{}, result{}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	llama := o.llamaBench
	if llama == "" {
		llama, _ = exec.LookPath("llama-bench")
	}
	for round := range o.rounds {
		for _, q := range o.quants {
			fmt.Fprintf(stderr, "round %d/%d %v: kvcache", round+1, o.rounds, q)
			if err := runOurs(ctx, paths[q], q, o, ours); err != nil {
				return err
			}
			if llama != "" {
				fmt.Fprint(stderr, ", llama.cpp")
				if err := runLlama(ctx, llama, paths[q], q, o, theirs); err != nil {
					return err
				}
			}
			fmt.Fprintln(stderr)
		}
	}
	printTable(stdout, o, ours, theirs, llama != "")
	if llama == "" {
		fmt.Fprintln(stdout, "\nllama-bench not on PATH: llama.cpp columns skipped (build llama.cpp and put llama-bench on PATH, or pass -llama-bench).")
	}
	if o.rss {
		if err := printRSSTable(ctx, stdout, paths, o); err != nil {
			return err
		}
	}
	if !o.ttft {
		return nil
	}
	f16, ok := paths[gguf.F16]
	if !ok {
		fmt.Fprintln(stdout, "\nTTFT comparison skipped: it runs on the F16 model (add F16 to -quants).")
		return nil
	}
	server := o.llamaServer
	switch server {
	case "":
		server, _ = exec.LookPath("llama-server")
	case "none":
		server = ""
	}
	return runTTFT(ctx, stdout, stderr, o, f16, server)
}

func parse(stderr io.Writer, args []string) (options, error) {
	fs := flag.NewFlagSet("enginebench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var prompts, quants string
	fs.StringVar(&o.dir, "dir", filepath.Join(os.TempDir(), "kvcache-enginebench"), "where the benchmark GGUF files are generated (kept between runs)")
	fs.IntVar(&o.rounds, "rounds", 5, "alternating rounds (medians are reported)")
	fs.IntVar(&o.threads, "threads", 2, "threads for both engines (GOMAXPROCS; llama-bench -t)")
	fs.StringVar(&prompts, "p", "128,512", "prompt lengths for prefill")
	fs.IntVar(&o.gen, "n", 128, "generated tokens for decode")
	fs.StringVar(&quants, "quants", "F16,Q8_0", "weight types")
	fs.StringVar(&o.llamaBench, "llama-bench", "", "llama-bench binary (default: llama-bench on PATH)")
	fs.StringVar(&o.rssOf, "rss-of", "", "internal: load this GGUF, run a short prefill and print the RSS")
	fs.BoolVar(&o.rss, "rss", true, "also report resident memory in place vs dequantized")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the kvcache runs to this file")
	fs.BoolVar(&o.rssHeap, "rss-heap", false, "internal: with -rss-of, dequantize the weights to float32 on the heap")
	fs.BoolVar(&o.ttft, "ttft", true, "also compare time to first token: llama-server's prompt cache vs kvcache's miss, remote hit and hot-tier hit")
	fs.IntVar(&o.ttftTokens, "ttft-tokens", 1024, "prompt length of the TTFT comparison")
	fs.IntVar(&o.ttftRounds, "ttft-rounds", 5, "alternating rounds of the TTFT comparison (medians are reported)")
	fs.StringVar(&o.llamaServer, "llama-server", "", "llama-server binary (default: llama-server on PATH; none: kvcache rows only)")
	exe, _ := os.Executable()
	fs.StringVar(&o.bin, "bin", filepath.Dir(exe), "directory holding the cachenode and worker binaries (make bench-engine builds them into bin/)")
	if err := fs.Parse(args); err != nil {
		return o, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	for _, s := range strings.Split(prompts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 || n > BenchConfig().ContextLen {
			return o, fmt.Errorf("%w: bad prompt length %q", ErrUsage, s)
		}
		o.prompts = append(o.prompts, n)
	}
	for _, s := range strings.Split(quants, ",") {
		switch strings.ToUpper(strings.TrimSpace(s)) {
		case "F16":
			o.quants = append(o.quants, gguf.F16)
		case "Q8_0":
			o.quants = append(o.quants, gguf.Q8_0)
		case "F32":
			o.quants = append(o.quants, gguf.F32)
		default:
			return o, fmt.Errorf("%w: weight type %q (want F16, Q8_0 or F32)", ErrUsage, s)
		}
	}
	if o.ttftRounds < 1 || o.ttftTokens < 2 || o.ttftTokens >= BenchConfig().ContextLen {
		return o, fmt.Errorf("%w: -ttft-rounds must be positive and -ttft-tokens in [2, %d)", ErrUsage, BenchConfig().ContextLen)
	}
	if o.rounds < 1 || o.threads < 1 || o.gen < 1 || o.gen > BenchConfig().ContextLen {
		return o, fmt.Errorf("%w: -rounds, -threads and -n must be positive (n <= context)", ErrUsage)
	}
	return o, nil
}

// ensureModel writes the benchmark model as type q into dir unless it is
// already there.
func ensureModel(dir string, q gguf.TensorType, log io.Writer) (string, error) {
	path := filepath.Join(dir, fmt.Sprintf("bench-125m-%s.gguf", strings.ToLower(q.String())))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "generating %s\n", path)
	m, err := model.Synthetic("kvcache-bench-125m", BenchConfig(), model.DefaultSeed)
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "gen-*.gguf")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	if err := m.WriteGGUF(tmp, q); err != nil {
		tmp.Close()
		return "", err
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	// llama.cpp does not know the byte-level tokenizer: give the file a
	// llama (SentencePiece) vocabulary of Vocab tokens instead.
	final := path + ".tmp"
	defer os.Remove(final)
	if err := withLlamaVocab(tmp.Name(), final, BenchConfig().Vocab); err != nil {
		return "", err
	}
	return path, os.Rename(final, path)
}

// withLlamaVocab copies the GGUF at src to dst with its tokenizer metadata
// replaced by a SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte
// tokens, then placeholder pieces up to n tokens. Tensors are copied as
// they are.
func withLlamaVocab(src, dst string, n int) error {
	f, err := gguf.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	w := gguf.NewWriter()
	for _, k := range f.Keys() {
		if strings.HasPrefix(k, "tokenizer.") {
			continue
		}
		v, _ := f.Value(k)
		if err := w.SetKV(k, v); err != nil {
			return err
		}
	}
	tokens := make([]string, n)
	scores := make([]float32, n)
	types := make([]int32, n)
	tokens[0], tokens[1], tokens[2] = "<unk>", "<s>", "</s>"
	types[0], types[1], types[2] = 2, 3, 3 // unknown, control
	for i := 3; i < n; i++ {
		if b := i - 3; b < 256 {
			tokens[i], types[i] = fmt.Sprintf("<0x%02X>", b), 6 // byte
			continue
		}
		tokens[i], types[i], scores[i] = fmt.Sprintf("▁t%d", i), 1, -float32(i)
	}
	for _, kv := range []struct {
		k string
		v any
	}{
		{"tokenizer.ggml.model", "llama"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.scores", scores},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.unknown_token_id", uint32(0)},
		{"tokenizer.ggml.bos_token_id", uint32(1)},
		{"tokenizer.ggml.eos_token_id", uint32(2)},
	} {
		if err := w.SetKV(kv.k, kv.v); err != nil {
			return err
		}
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	for _, ti := range f.Tensors {
		off := f.DataOffset + int64(ti.Offset)
		if err := w.AddRawTensor(ti.Name, ti.Type, ti.Dims, raw[off:off+ti.Size]); err != nil {
			return err
		}
	}
	return w.WriteFile(dst)
}

// tokens returns n deterministic token ids inside the byte vocabulary.
func tokens(n int) []int {
	t := make([]int, n)
	for i := range t {
		t[i] = (i*37 + 11) % 256
	}
	return t
}

// runOurs measures prefill of each prompt length from an empty sequence
// and decode of o.gen tokens from an empty sequence (llama-bench's pp and
// tg tests).
func runOurs(ctx context.Context, path string, q gguf.TensorType, o options, res result) error {
	m, err := model.Load(ctx, path)
	if err != nil {
		return err
	}
	// Warm up: page the mapping in.
	if _, err := m.NewSequence(16).Prefill(ctx, tokens(16)); err != nil {
		return err
	}
	for _, p := range o.prompts {
		s := m.NewSequence(16)
		t0 := time.Now()
		if _, err := s.Prefill(ctx, tokens(p)); err != nil {
			return err
		}
		res.add(q, fmt.Sprintf("pp%d", p), float64(p)/time.Since(t0).Seconds())
	}
	s := m.NewSequence(16)
	toks := tokens(o.gen)
	t0 := time.Now()
	for _, t := range toks {
		if _, err := s.Decode(ctx, t); err != nil {
			return err
		}
	}
	res.add(q, fmt.Sprintf("tg%d", o.gen), float64(o.gen)/time.Since(t0).Seconds())
	runtime.KeepAlive(m)
	return nil
}

// runLlama runs one llama-bench repetition of the same tests.
func runLlama(ctx context.Context, bin, path string, q gguf.TensorType, o options, res result) error {
	var ps []string
	for _, p := range o.prompts {
		ps = append(ps, strconv.Itoa(p))
	}
	cmd := exec.CommandContext(ctx, bin, "-m", path, "-t", strconv.Itoa(o.threads),
		"-p", strings.Join(ps, ","), "-n", strconv.Itoa(o.gen), "-r", "1", "-o", "json")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("llama-bench: %w: %s", err, lastLine(errb.String()))
	}
	var rows []struct {
		NPrompt int     `json:"n_prompt"`
		NGen    int     `json:"n_gen"`
		AvgTS   float64 `json:"avg_ts"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		return fmt.Errorf("llama-bench output: %w", err)
	}
	for _, r := range rows {
		switch {
		case r.NGen == 0:
			res.add(q, fmt.Sprintf("pp%d", r.NPrompt), r.AvgTS)
		case r.NPrompt == 0:
			res.add(q, fmt.Sprintf("tg%d", r.NGen), r.AvgTS)
		}
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

func printTable(w io.Writer, o options, ours, theirs result, haveLlama bool) {
	fmt.Fprintln(w, "\n| quant | metric | llama.cpp | kvcache | slower by |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	f := func(v float64) string {
		if v == 0 {
			return "-"
		}
		return fmt.Sprintf("%.0f", v)
	}
	ratio := func(l, k float64) string {
		if l == 0 || k == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fx", l/k)
	}
	for _, q := range o.quants {
		var ls, ks, rs, names []string
		for _, p := range o.prompts {
			m := fmt.Sprintf("pp%d", p)
			names = append(names, strconv.Itoa(p))
			l, k := theirs.median(q, m), ours.median(q, m)
			ls, ks, rs = append(ls, f(l)), append(ks, f(k)), append(rs, ratio(l, k))
		}
		fmt.Fprintf(w, "| %v | prefill %s tok/s | %s | %s | %s |\n", q, strings.Join(names, " / "),
			strings.Join(ls, " / "), strings.Join(ks, " / "), strings.Join(rs, " / "))
		m := fmt.Sprintf("tg%d", o.gen)
		l, k := theirs.median(q, m), ours.median(q, m)
		fmt.Fprintf(w, "| %v | decode %d tok/s | %s | %s | %s |\n", q, o.gen, f(l), f(k), ratio(l, k))
	}
}

// printRSSTable loads each file in a fresh process (in place, and
// dequantized to float32 on the heap as the engine used to) and reports
// the resident set against the file size.
func printRSSTable(ctx context.Context, w io.Writer, paths map[gguf.TensorType]string, o options) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	fmt.Fprintln(w, "\n| quant | file MB | RSS in place (mmap) MB | RSS dequantized to f32 MB |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, q := range o.quants {
		st, err := os.Stat(paths[q])
		if err != nil {
			return err
		}
		var rss [2]string
		for i, heap := range []bool{false, true} {
			out, err := exec.CommandContext(ctx, exe, "-rss-of", paths[q], "-rss-heap="+strconv.FormatBool(heap), "-threads", strconv.Itoa(o.threads)).Output()
			if err != nil {
				return fmt.Errorf("rss of %s: %w", paths[q], err)
			}
			rss[i] = strings.TrimSpace(string(out))
		}
		fmt.Fprintf(w, "| %v | %.0f | %s | %s |\n", q, float64(st.Size())/1e6, rss[0], rss[1])
	}
	return nil
}

// printRSS loads path, prefills 64 tokens and prints the process's
// resident set in MB.
func printRSS(ctx context.Context, w io.Writer, path string, heap bool) error {
	var m *model.Model
	var err error
	if heap {
		var f *gguf.File
		if f, err = gguf.Open(path); err != nil {
			return err
		}
		m, err = model.FromGGUF(f)
		f.Close()
	} else {
		m, err = model.Load(ctx, path)
	}
	if err != nil {
		return err
	}
	if _, err := m.NewSequence(16).Prefill(ctx, tokens(64)); err != nil {
		return err
	}
	runtime.GC()
	rss, err := vmRSS()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%.0f\n", rss/1e6)
	runtime.KeepAlive(m)
	return nil
}

// vmRSS reads the resident set size from /proc/self/status.
func vmRSS() (float64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * 1e3, err
		}
	}
	return 0, errors.New("no VmRSS in /proc/self/status")
}
