package model

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/half"
	"github.com/kvcache/kvcache/pkg/gguf"
)

func tinyModel(t testing.TB, mutate func(*Config)) *Model {
	t.Helper()
	cfg := TinyConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := Synthetic("tiny", cfg, 42)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func prompt(n int) []int {
	toks := make([]int, n)
	for i := range toks {
		toks[i] = (i*37 + 11) % 256
	}
	return toks
}

func prefill(t testing.TB, s *Sequence, toks []int) []float32 {
	t.Helper()
	logits, err := s.Prefill(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	return logits
}

func sameBits(a, b []float32) (int, bool) {
	if len(a) != len(b) {
		return -1, false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i, false
		}
	}
	return 0, true
}

// TestSplitInvariance checks the central property: the last-token logits
// are bit-identical whether the prompt is prefilled at once, in arbitrary
// chunks, token by token, or after importing KV blocks exported by another
// sequence.
func TestSplitInvariance(t *testing.T) {
	for cla, mut := range map[string]func(*Config){
		"plain": nil,
		"cla":   func(c *Config) { c.CLA = true },
		// A window that ends inside blocks and chunks, with biases.
		"qwen2+window": func(c *Config) { c.Arch = ArchQwen2; c.SlidingWindow = 11 },
	} {
		m := tinyModel(t, mut)
		toks := prompt(75)
		ref := m.NewSequence(16)
		want := prefill(t, ref, toks)

		t.Run("decode", func(t *testing.T) {
			s := m.NewSequence(16)
			var got []float32
			for _, tok := range toks {
				var err error
				if got, err = s.Decode(context.Background(), tok); err != nil {
					t.Fatal(err)
				}
			}
			if i, ok := sameBits(got, want); !ok {
				t.Fatalf("variant %s: token-by-token logits differ at %d", cla, i)
			}
		})
		t.Run("chunks", func(t *testing.T) {
			s := m.NewSequence(16)
			var got []float32
			for i, step := 0, 1; i < len(toks); i, step = i+step, step*2+1 {
				got = prefill(t, s, toks[i:min(len(toks), i+step)])
			}
			if i, ok := sameBits(got, want); !ok {
				t.Fatalf("variant %s: chunked logits differ at %d", cla, i)
			}
		})
		for _, b := range []int{4, 16, 32} {
			src := m.NewSequence(b)
			prefill(t, src, toks)
			for k := 1; k*b < len(toks); k++ {
				s := m.NewSequence(b)
				kb := make([]float32, s.BlockLen())
				vb := make([]float32, s.BlockLen())
				for i := 0; i < k; i++ {
					if err := src.ExportBlock(i, kb, vb); err != nil {
						t.Fatal(err)
					}
					if err := s.ImportBlock(i, kb, vb); err != nil {
						t.Fatal(err)
					}
				}
				if s.Len() != k*b {
					t.Fatalf("Len = %d after %d imports of %d", s.Len(), k, b)
				}
				got := prefill(t, s, toks[k*b:])
				if i, ok := sameBits(got, want); !ok {
					t.Fatalf("variant %s B=%d k=%d: logits differ at %d: %v vs %v", cla, b, k, i, got[i], want[i])
				}
			}
		}
	}
}

// TestLongPrefillChunks crosses the internal maxChunk boundary.
func TestLongPrefillChunks(t *testing.T) {
	m := tinyModel(t, func(c *Config) { c.ContextLen = 2 * maxChunk })
	toks := prompt(maxChunk + 40)
	want := prefill(t, m.NewSequence(64), toks)
	s := m.NewSequence(64)
	prefill(t, s, toks[:100])
	got := prefill(t, s, toks[100:])
	if i, ok := sameBits(got, want); !ok {
		t.Fatalf("logits differ at %d", i)
	}
}

func TestMatmulBatchIndependent(t *testing.T) {
	k, m := 37, 29
	x := make([]float32, 7*k)
	w := make([]float32, m*k)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	for i := range w {
		w[i] = float32(math.Cos(float64(i) * 0.7))
	}
	full := make([]float32, 7*m)
	wt := f32Weight(m, k, w)
	matmul(full, x, wt, 7)
	for r := 0; r < 7; r++ {
		row := make([]float32, m)
		matmul(row, x[r*k:(r+1)*k], wt, 1)
		for o := range row {
			if ref := dotF32(x[r*k:(r+1)*k], w[o*k:(o+1)*k]); row[o] != full[r*m+o] || row[o] != ref {
				t.Fatalf("row %d col %d: batched %v single %v dot %v", r, o, full[r*m+o], row[o], ref)
			}
		}
	}
}

// naiveLogits is a straightforward float64 reference implementation,
// token by token, keeping K and V rounded to f16 like the engine.
func naiveLogits(m *Model, toks []int) []float64 {
	c := m.cfg
	hd, kd := c.HeadDim, c.KVDim()
	matvec := func(w []float32, x []float64, out int) []float64 {
		y := make([]float64, out)
		for o := range y {
			for i, v := range x {
				y[o] += float64(w[o*len(x)+i]) * v
			}
		}
		return y
	}
	norm := func(x []float64, w []float32) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+c.NormEps)
		y := make([]float64, len(x))
		for i, v := range x {
			y[i] = v * s * float64(w[i])
		}
		return y
	}
	rot := func(x []float64, pos int) {
		for h := 0; h < len(x)/hd; h++ {
			for i := 0; i < hd/2; i++ {
				ang := float64(pos) / c.ropeScale() * math.Pow(c.RopeTheta, -float64(2*i)/float64(hd))
				a, b := x[h*hd+2*i], x[h*hd+2*i+1]
				x[h*hd+2*i] = a*math.Cos(ang) - b*math.Sin(ang)
				x[h*hd+2*i+1] = a*math.Sin(ang) + b*math.Cos(ang)
			}
		}
	}
	r16 := func(x []float64) []float64 {
		for i := range x {
			x[i] = float64(half.Round(float32(x[i])))
		}
		return x
	}
	K := make([][][]float64, c.KVLayers())
	V := make([][][]float64, c.KVLayers())
	var logits []float64
	for pos, tok := range toks {
		x := make([]float64, c.Dim)
		for i := range x {
			x[i] = float64(m.embed.values()[tok*c.Dim+i])
		}
		for l, ly := range m.layers {
			xn := norm(x, ly.attnNorm)
			bias := func(y []float64, b []float32) []float64 {
				for i := range b {
					y[i] += float64(b[i])
				}
				return y
			}
			q := bias(matvec(ly.wq.values(), xn, c.Heads*hd), ly.bq)
			rot(q, pos)
			kl := c.kvLayer(l)
			if ly.wk != nil {
				k := bias(matvec(ly.wk.values(), xn, kd), ly.bk)
				rot(k, pos)
				K[kl] = append(K[kl], r16(k))
				V[kl] = append(V[kl], r16(bias(matvec(ly.wv.values(), xn, kd), ly.bv)))
			}
			att := make([]float64, c.Heads*hd)
			for h := 0; h < c.Heads; h++ {
				g := h / (c.Heads / c.KVHeads)
				// Keys visible to pos: all before it, or the last
				// SlidingWindow positions including its own.
				lo := 0
				if w := c.SlidingWindow; w > 0 {
					lo = max(0, pos-w+1)
				}
				sc := make([]float64, pos+1-lo)
				mx := math.Inf(-1)
				for j := range sc {
					for d := 0; d < hd; d++ {
						sc[j] += q[h*hd+d] * K[kl][lo+j][g*hd+d]
					}
					sc[j] /= math.Sqrt(float64(hd))
					mx = max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for d := 0; d < hd; d++ {
						att[h*hd+d] += sc[j] / sum * V[kl][lo+j][g*hd+d]
					}
				}
			}
			for i, v := range matvec(ly.wo.values(), att, c.Dim) {
				x[i] += v
			}
			xn = norm(x, ly.ffnNorm)
			gt := matvec(ly.wGate.values(), xn, c.FFNDim)
			up := matvec(ly.wUp.values(), xn, c.FFNDim)
			for i := range gt {
				gt[i] = gt[i] / (1 + math.Exp(-gt[i])) * up[i]
			}
			for i, v := range matvec(ly.wDown.values(), gt, c.Dim) {
				x[i] += v
			}
		}
		if pos == len(toks)-1 {
			logits = matvec(m.output.values(), norm(x, m.outNorm), c.Vocab)
		}
	}
	return logits
}

func TestAgainstNaive(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"plain", nil},
		{"cla", func(c *Config) { c.CLA = true }},
		{"ropescale", func(c *Config) { c.RopeScale = 4; c.RopeTheta = 500000 }},
		{"mha", func(c *Config) { c.KVHeads = c.Heads }},
		{"qwen2", func(c *Config) { c.Arch = ArchQwen2 }},
		{"qwen2+cla", func(c *Config) { c.Arch = ArchQwen2; c.CLA = true }},
		{"window", func(c *Config) { c.SlidingWindow = 5 }},
		{"window1", func(c *Config) { c.SlidingWindow = 1 }},
		{"qwen2+window+cla", func(c *Config) { c.Arch = ArchQwen2; c.SlidingWindow = 7; c.CLA = true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel(t, tc.mut)
			toks := prompt(20)
			got := prefill(t, m.NewSequence(8), toks)
			want := naiveLogits(m, toks)
			for i := range want {
				if d := math.Abs(float64(got[i]) - want[i]); d > 2e-3*(1+math.Abs(want[i])) {
					t.Fatalf("logit %d = %v, want %v (diff %g)", i, got[i], want[i], d)
				}
			}
		})
	}
}

func TestRope(t *testing.T) {
	for _, scale := range []float64{1, 2} {
		cos, sin := ropeTable(3, 1, 4, 10000, scale)
		x := []float32{1, 0, 0, 1}
		rope(x, 1, 1, 4, cos, sin)
		a0 := 3 / scale        // pair 0: theta^0 = 1
		a1 := 3 / scale * 0.01 // pair 1: 10000^(-2/4)
		want := []float64{math.Cos(a0), math.Sin(a0), -math.Sin(a1), math.Cos(a1)}
		for i := range want {
			if math.Abs(float64(x[i])-want[i]) > 1e-6 {
				t.Fatalf("scale %v: rope[%d] = %v, want %v", scale, i, x[i], want[i])
			}
		}
	}
}

func TestRMSNorm(t *testing.T) {
	x := []float32{1, 2, 3, 4}
	out := make([]float32, 4)
	rmsNorm(out, x, []float32{1, 1, 2, 1}, 1, 4, 0)
	rms := math.Sqrt(7.5)
	want := []float64{1 / rms, 2 / rms, 6 / rms, 4 / rms}
	for i := range want {
		if math.Abs(float64(out[i])-want[i]) > 1e-6 {
			t.Fatalf("out[%d] = %v, want %v", i, out[i], want[i])
		}
	}
}

func TestSoftmaxStable(t *testing.T) {
	tests := []struct {
		in   []float32
		want []float64
	}{
		{[]float32{1e30, 1e30}, []float64{0.5, 0.5}},
		{[]float32{-1e30, 0}, []float64{0, 1}},
		{[]float32{1000, 999}, []float64{1 / (1 + math.Exp(-1)), math.Exp(-1) / (1 + math.Exp(-1))}},
		{[]float32{float32(math.Inf(-1)), 5}, []float64{0, 1}},
	}
	for _, tc := range tests {
		x := append([]float32(nil), tc.in...)
		softmax(x)
		for i := range x {
			if math.IsNaN(float64(x[i])) || math.Abs(float64(x[i])-tc.want[i]) > 1e-6 {
				t.Fatalf("softmax(%v) = %v, want %v", tc.in, x, tc.want)
			}
		}
	}
}

func TestCLAHalvesKV(t *testing.T) {
	plain := tinyModel(t, nil)
	cla := tinyModel(t, func(c *Config) { c.CLA = true })
	sp, sc := plain.NewSequence(16), cla.NewSequence(16)
	if sp.KVLayers() != 2 || sc.KVLayers() != 1 {
		t.Fatalf("KVLayers = %d, %d", sp.KVLayers(), sc.KVLayers())
	}
	if sc.BlockLen()*2 != sp.BlockLen() || cla.KVBytesPerToken()*2 != plain.KVBytesPerToken() {
		t.Fatalf("CLA block %d vs %d, bytes %d vs %d", sc.BlockLen(), sp.BlockLen(), cla.KVBytesPerToken(), plain.KVBytesPerToken())
	}
	if cla.layers[1].wk != nil || cla.layers[0].wk == nil {
		t.Fatal("CLA consumer layer has its own K projection")
	}
	if info := cla.Info(); info.KVLayers != 1 || !info.CLA || info.Layers != 2 {
		t.Fatalf("info = %+v", info)
	}
}

func TestErrors(t *testing.T) {
	m := tinyModel(t, func(c *Config) { c.ContextLen = 32 })
	ctx := context.Background()
	s := m.NewSequence(8)
	if _, err := s.Prefill(ctx, prompt(33)); !errors.Is(err, ErrContextFull) {
		t.Errorf("prefill 33 into 32: %v", err)
	}
	if _, err := s.Prefill(ctx, []int{1, 260}); !errors.Is(err, ErrBadToken) {
		t.Errorf("bad token: %v", err)
	}
	if _, err := s.Prefill(ctx, nil); !errors.Is(err, ErrBadToken) {
		t.Errorf("empty prefill: %v", err)
	}
	prefill(t, s, prompt(30))
	buf := make([]float32, s.BlockLen())
	if err := s.ExportBlock(3, buf, buf); !errors.Is(err, ErrBadBlock) {
		t.Errorf("export partial block: %v", err)
	}
	if err := s.ExportBlock(0, buf[1:], buf); !errors.Is(err, ErrBadBlock) {
		t.Errorf("export short buffer: %v", err)
	}
	if err := s.ImportBlock(3, buf, buf); !errors.Is(err, ErrBadBlock) {
		t.Errorf("import at wrong position: %v", err)
	}
	if _, err := s.Prefill(ctx, prompt(3)); !errors.Is(err, ErrContextFull) {
		t.Errorf("prefill past context: %v", err)
	}
	if s.Len() != 30 {
		t.Errorf("failed prefills changed Len to %d", s.Len())
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Prefill(cctx, prompt(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled prefill: %v", err)
	}
	// The sequence is unchanged: continuing gives the same result as a
	// fresh sequence.
	got := prefill(t, s, []int{5})
	want := prefill(t, m.NewSequence(8), append(prompt(30), 5))
	if i, ok := sameBits(got, want); !ok {
		t.Fatalf("after cancel, logits differ at %d", i)
	}
	s.Truncate(8)
	if s.Len() != 8 {
		t.Fatalf("Truncate: Len = %d", s.Len())
	}
	if err := s.ImportBlock(1, buf, buf); err != nil {
		t.Fatalf("import after truncate: %v", err)
	}
}

func TestImportRoundsToHalf(t *testing.T) {
	m := tinyModel(t, nil)
	s := m.NewSequence(4)
	k := make([]float32, s.BlockLen())
	v := make([]float32, s.BlockLen())
	for i := range k {
		k[i] = 1 + 1.0/4096 // not f16-representable
	}
	if err := s.ImportBlock(0, k, v); err != nil {
		t.Fatal(err)
	}
	if err := s.ExportBlock(0, k, v); err != nil {
		t.Fatal(err)
	}
	if k[0] != 1 {
		t.Fatalf("imported key not rounded: %v", k[0])
	}
}

func writeModel(t *testing.T, m *Model, typ gguf.TensorType, tensors []namedTensor) string {
	t.Helper()
	gw, err := m.ggufWriter(typ, tensors)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "model.gguf")
	if err := gw.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGGUFRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mut  func(*Config)
		tie  bool
	}{
		{"plain", nil, false},
		{"cla+ropescale", func(c *Config) { c.CLA = true; c.RopeScale = 2 }, false},
		{"tied", nil, true},
		{"qwen2+window", func(c *Config) { c.Arch = ArchQwen2; c.SlidingWindow = 6 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := tinyModel(t, tc.mut)
			if tc.tie {
				m.tied, m.output = true, m.embed
			}
			var buf bytes.Buffer
			if err := m.WriteGGUF(&buf, gguf.F32); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := Load(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			if got.Config() != m.Config() {
				t.Fatalf("config %+v, want %+v", got.Config(), m.Config())
			}
			if got.tied != tc.tie || got.WeightsDigest() != m.WeightsDigest() {
				t.Fatalf("tied=%v digest match=%v", got.tied, got.WeightsDigest() == m.WeightsDigest())
			}
			if got.Tokenizer().VocabSize() != 260 || got.ChatTemplate().Name() != "chatml" {
				t.Fatalf("tokenizer/template not restored")
			}
			toks := prompt(10)
			a, b := prefill(t, m.NewSequence(4), toks), prefill(t, got.NewSequence(4), toks)
			if i, ok := sameBits(a, b); !ok {
				t.Fatalf("logits differ at %d", i)
			}
		})
	}
	// Quantized weights load and stay close.
	m := tinyModel(t, nil)
	path := writeModel(t, m, gguf.Q8_0, m.tensors())
	q, err := Load(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if q.WeightsDigest() == m.WeightsDigest() {
		t.Fatal("Q8_0 weights have the F32 digest")
	}
	// Q8_0 also quantizes the activations (as llama.cpp does), so the
	// bound is relative to the logits' spread.
	a, b := prefill(t, m.NewSequence(4), prompt(10)), prefill(t, q.NewSequence(4), prompt(10))
	var spread, worst float64
	for i := range a {
		spread = max(spread, math.Abs(float64(a[i])))
		worst = max(worst, math.Abs(float64(a[i]-b[i])))
	}
	if worst > 0.1*spread {
		t.Fatalf("Q8_0 logits differ from F32 by up to %.3g (largest logit %.3g)", worst, spread)
	}
	t.Logf("Q8_0 vs F32: max logit error %.3g of %.3g", worst, spread)
}

func TestBadGGUF(t *testing.T) {
	m := tinyModel(t, nil)
	drop := func(name string) []namedTensor {
		var out []namedTensor
		for _, t := range m.tensors() {
			if t.name != name {
				out = append(out, t)
			}
		}
		return out
	}
	reshape := func(name string, dims []uint64) []namedTensor {
		out := m.tensors()
		for i := range out {
			if out[i].name == name {
				out[i].dims = dims
			}
		}
		return out
	}
	tests := []struct {
		name    string
		tensors []namedTensor
		wantErr error
		mention string
	}{
		{"missing tensor", drop("blk.1.ffn_up.weight"), ErrBadWeights, `"blk.1.ffn_up.weight"`},
		{"wrong shape", reshape("blk.0.attn_q.weight", []uint64{32, 128}), ErrBadWeights, "shape [32 128], want [64 64]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(context.Background(), writeModel(t, m, gguf.F32, tc.tensors))
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err = %v, want %v mentioning %s", err, tc.wantErr, tc.mention)
			}
		})
	}
	meta := []struct {
		name    string
		key     string
		val     any
		wantErr error
		mention string
	}{
		{"arch", "general.architecture", "gptneox", gguf.ErrUnsupported, "gptneox"},
		{"rope scaling", "llama.rope.scaling.type", "yarn", gguf.ErrUnsupported, "yarn"},
		{"heads", "llama.attention.head_count_kv", uint32(3), ErrBadConfig, "kv heads 3"},
		{"dims type", "llama.block_count", "two", gguf.ErrType, "llama.block_count"},
	}
	for _, tc := range meta {
		t.Run(tc.name, func(t *testing.T) {
			gw, err := m.ggufWriter(gguf.F32, m.tensors())
			if err != nil {
				t.Fatal(err)
			}
			if err := gw.SetKV(tc.key, tc.val); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "m.gguf")
			if err := gw.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			_, err = Load(context.Background(), path)
			if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.mention) {
				t.Fatalf("err = %v, want %v mentioning %s", err, tc.wantErr, tc.mention)
			}
		})
	}
	// A truncated file surfaces the gguf error.
	path := writeModel(t, m, gguf.F32, m.tensors())
	raw, _ := os.ReadFile(path)
	if err := os.WriteFile(path, raw[:len(raw)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(context.Background(), path); !errors.Is(err, gguf.ErrTruncated) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestSampler(t *testing.T) {
	logits := []float32{0.1, 3, 0.2, 2.9}
	if got := NewSampler(0, 0, 1).Sample(logits); got != 1 {
		t.Fatalf("greedy = %d", got)
	}
	if got := NewSampler(1, 0.01, 1).Sample(logits); got != 1 {
		t.Fatalf("top-p 0.01 = %d", got)
	}
	a, b := NewSampler(1, 0, 7), NewSampler(1, 0, 7)
	counts := map[int]int{}
	for i := 0; i < 200; i++ {
		x, y := a.Sample(logits), b.Sample(logits)
		if x != y {
			t.Fatal("same seed, different samples")
		}
		counts[x]++
	}
	if counts[1] == 0 || counts[3] == 0 || counts[1] < counts[0] {
		t.Fatalf("implausible distribution %v", counts)
	}
	for i := 0; i < 100; i++ {
		if s := NewSampler(1, 0.9, uint64(i)).Sample(logits); s != 1 && s != 3 {
			t.Fatalf("top-p 0.9 sampled %d", s)
		}
	}
}

// TestGreedyNotDegenerate checks that synthetic weights give varied output.
func TestGreedyNotDegenerate(t *testing.T) {
	m := tinyModel(t, nil)
	s := m.NewSequence(16)
	ctx := context.Background()
	logits := prefill(t, s, m.Tokenizer().Encode("Hello, world"))
	seen := map[int]bool{}
	for i := 0; i < 40; i++ {
		tok := Argmax(logits)
		for _, v := range logits {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatal("non-finite logit")
			}
		}
		seen[tok] = true
		var err error
		if logits, err = s.Decode(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if len(seen) < 3 {
		t.Fatalf("greedy output uses only %d distinct tokens", len(seen))
	}
}

func TestInfoAndDigest(t *testing.T) {
	a, b := tinyModel(t, nil), tinyModel(t, nil)
	if a.WeightsDigest() != b.WeightsDigest() {
		t.Fatal("same seed, different digests")
	}
	c, _ := Synthetic("tiny", TinyConfig(), 43)
	if c.WeightsDigest() == a.WeightsDigest() {
		t.Fatal("different seeds, same digest")
	}
	info := a.Info()
	if info.KVLayers != 2 || info.KVHeads != 2 || info.HeadDim != 16 || !info.KeysPostRoPE || info.RopeScaling != "none" {
		t.Fatalf("info = %+v", info)
	}
	if a.KVBytesPerToken() != 2*2*2*32 {
		t.Fatalf("KVBytesPerToken = %d", a.KVBytesPerToken())
	}
}

func TestDefaultModel(t *testing.T) {
	for _, tc := range []struct {
		opts     *DefaultOptions
		kvBytes  int
		kvLayers int
	}{{nil, 3072, 6}, {&DefaultOptions{CLA: true}, 1536, 3}} {
		m := Default(tc.opts)
		info := m.Info()
		if m.KVBytesPerToken() != tc.kvBytes || info.KVLayers != tc.kvLayers || info.Name == "" {
			t.Fatalf("default %+v: KV bytes %d, info %+v", tc.opts, m.KVBytesPerToken(), info)
		}
		if tc.opts != nil {
			continue
		}
		ctx := context.Background()
		s := m.NewSequence(16)
		logits := prefill(t, s, m.Tokenizer().Encode("The quick brown fox"))
		seen := map[int]bool{}
		for i := 0; i < 24; i++ {
			tok := Argmax(logits)
			seen[tok] = true
			var err error
			if logits, err = s.Decode(ctx, tok); err != nil {
				t.Fatal(err)
			}
		}
		if len(seen) < 3 {
			t.Fatalf("default model greedy output uses %d distinct tokens", len(seen))
		}
	}
}

func TestConcurrentSequences(t *testing.T) {
	m := tinyModel(t, nil)
	want := prefill(t, m.NewSequence(8), prompt(40))
	errs := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			s := m.NewSequence(8)
			got, err := s.Prefill(context.Background(), prompt(40))
			if err == nil {
				if i, ok := sameBits(got, want); !ok {
					err = fmt.Errorf("logits differ at %d", i)
				}
			}
			errs <- err
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// Reserve makes room once: the KV keeps its contents and length, and
// importing or prefilling up to the reserved length copies nothing.
func TestReserveKeepsKVAndStopsGrowth(t *testing.T) {
	ctx := context.Background()
	m := tinyModel(t, nil)
	s := m.NewSequence(4)
	toks := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if _, err := s.Prefill(ctx, toks[:8]); err != nil {
		t.Fatal(err)
	}
	before := make([]float32, s.BlockLen())
	if err := s.ExportBlock(1, before, make([]float32, s.BlockLen())); err != nil {
		t.Fatal(err)
	}
	s.Reserve(16)
	if s.Len() != 8 {
		t.Fatalf("Reserve changed Len to %d", s.Len())
	}
	after := make([]float32, s.BlockLen())
	if err := s.ExportBlock(1, after, make([]float32, s.BlockLen())); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(before, after) {
		t.Fatal("Reserve changed the KV")
	}
	base := &s.k[0][:1][0]
	buf := make([]float32, s.BlockLen())
	if err := s.ImportBlock(2, buf, buf); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prefill(ctx, toks[:4]); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 16 || &s.k[0][:1][0] != base {
		t.Fatalf("Len %d, KV moved: %v", s.Len(), &s.k[0][:1][0] != base)
	}
	s.Reserve(4) // never shrinks
	if cap(s.k[0]) < 16*m.cfg.KVDim() {
		t.Fatalf("Reserve(4) shrank the KV to %d values", cap(s.k[0]))
	}
}

// A block holding a value that is not an f16 (it would poison attention)
// is refused whole: the sequence is left as it was.
func TestImportRefusesValuesBeyondHalf(t *testing.T) {
	m := tinyModel(t, nil)
	for _, bad := range []float32{65520, -1e9, float32(math.Inf(-1)), float32(math.NaN())} {
		s := m.NewSequence(4)
		ok := make([]float32, s.BlockLen())
		if err := s.ImportBlock(0, ok, ok); err != nil {
			t.Fatal(err)
		}
		k := make([]float32, s.BlockLen())
		v := make([]float32, s.BlockLen())
		v[len(v)-1] = bad // the last layer's values: earlier layers were appended already
		if err := s.ImportBlock(1, k, v); !errors.Is(err, ErrBadBlock) {
			t.Fatalf("import of %v: %v, want ErrBadBlock", bad, err)
		}
		for l := range s.k {
			if s.Len() != 4 || len(s.k[l]) != 4*m.cfg.KVDim() || len(s.v[l]) != 4*m.cfg.KVDim() {
				t.Fatalf("refused import left Len %d, layer %d KV %d/%d values", s.Len(), l, len(s.k[l]), len(s.v[l]))
			}
		}
		// The same block position imports fine afterwards, and the
		// largest f16 (and what rounds to it) is accepted.
		v[len(v)-1] = 65519
		if err := s.ImportBlock(1, k, v); err != nil {
			t.Fatalf("import after refusal: %v", err)
		}
	}
}
