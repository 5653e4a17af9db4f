package model

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/kvcache/kvcache/pkg/gguf"
	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// CLAKey is the GGUF metadata key (bool) marking a cross-layer-attention
// model: layers 2i+1 have no attn_k/attn_v and reuse layer 2i's KV.
const CLAKey = "kvcache.cla"

// Load reads a llama- or qwen2-architecture GGUF file. The weights are used
// in their file encoding (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K), so the
// model's memory is about the file's size: by default a private read-only
// copy in (transparent) huge pages, or with LoadOptions.MapFile the file's
// own pages, mapped read-only and shared with the page cache. Where neither
// is possible the file is read onto the heap. Cancelling ctx aborts
// between tensors.
func Load(ctx context.Context, path string, opts ...LoadOptions) (*Model, error) {
	var o LoadOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model: load: %w", err)
	}
	defer f.Close()
	load := copyFile
	if o.MapFile {
		load = mapFile
	}
	data, unmap, err := load(path, f.Size)
	if err != nil {
		return nil, fmt.Errorf("model: load: %w", err)
	}
	m, err := fromGGUF(ctx, f, mappedSource(f, data), o)
	if err != nil {
		unmap()
		return nil, fmt.Errorf("model: load %s: %w", path, err)
	}
	m.mapping = data
	runtime.AddCleanup(m, func(unmap func()) { unmap() }, unmap)
	if m.name == "" {
		m.name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	return m, nil
}

// FromGGUF builds a model from a parsed GGUF file, dequantizing all weights
// to float32 and checking every tensor's shape against the metadata (Load
// keeps them in their file encoding instead).
func FromGGUF(f *gguf.File) (*Model, error) {
	m, err := fromGGUF(context.Background(), f, heapSource(f), LoadOptions{})
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	return m, nil
}

// ConfigFromGGUF reads the hyperparameters of a llama or qwen2 GGUF file
// (metadata keys under the architecture's prefix, e.g. qwen2.block_count).
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	var c Config
	arch, err := f.String("general.architecture")
	if err != nil {
		return c, err
	}
	if arch != ArchLlama && arch != ArchQwen2 {
		return c, fmt.Errorf("%w: architecture %q (want llama or qwen2)", gguf.ErrUnsupported, arch)
	}
	c.Arch = arch
	var firstErr error
	geti := func(key string, def int) int {
		v, err := f.Uint(key)
		if errors.Is(err, gguf.ErrNotFound) && def >= 0 {
			return def
		}
		if err == nil && v > 1<<31 {
			err = fmt.Errorf("%w: %s = %d is absurd", ErrBadConfig, key, v)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return int(v)
	}
	getf := func(key string, def float64) float64 {
		v, err := f.Float(key)
		if errors.Is(err, gguf.ErrNotFound) {
			return def
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if raw, _ := f.Value(key); err == nil {
			if f32, ok := raw.(float32); ok {
				// Use the shortest decimal of a float32 (1e-05, not
				// 9.999999747378752e-06), as configs are written.
				v, _ = strconv.ParseFloat(strconv.FormatFloat(float64(f32), 'g', -1, 32), 64)
			}
		}
		return v
	}
	c.Dim = geti(arch+".embedding_length", -1)
	c.Layers = geti(arch+".block_count", -1)
	c.FFNDim = geti(arch+".feed_forward_length", -1)
	c.Heads = geti(arch+".attention.head_count", -1)
	c.ContextLen = geti(arch+".context_length", -1)
	if firstErr != nil {
		return c, firstErr
	}
	c.KVHeads = geti(arch+".attention.head_count_kv", c.Heads)
	if c.Heads > 0 {
		c.HeadDim = geti(arch+".attention.key_length", c.Dim/c.Heads)
	}
	if vl := geti(arch+".attention.value_length", c.HeadDim); vl != c.HeadDim && firstErr == nil {
		firstErr = fmt.Errorf("%w: value_length %d != key_length %d", gguf.ErrUnsupported, vl, c.HeadDim)
	}
	if rd := geti(arch+".rope.dimension_count", c.HeadDim); rd != c.HeadDim && firstErr == nil {
		firstErr = fmt.Errorf("%w: partial rope (dimension_count %d, head dim %d)", gguf.ErrUnsupported, rd, c.HeadDim)
	}
	c.NormEps = getf(arch+".attention.layer_norm_rms_epsilon", 1e-5)
	c.RopeTheta = getf(arch+".rope.freq_base", 10000)
	c.RopeScale = 1
	st, err := f.String(arch + ".rope.scaling.type")
	switch {
	case errors.Is(err, gguf.ErrNotFound) || st == "none" || st == "":
		if err != nil { // no type: llama.cpp treats a bare factor as linear
			c.RopeScale = getf(arch+".rope.scaling.factor", 1)
		}
	case err != nil:
		return c, err
	case st == "linear":
		c.RopeScale = getf(arch+".rope.scaling.factor", 1)
	default:
		return c, fmt.Errorf("%w: rope scaling type %q", gguf.ErrUnsupported, st)
	}
	if c.RopeScale == 0 {
		c.RopeScale = 1
	}
	if ti, ok := f.Tensor("token_embd.weight"); ok && len(ti.Dims) == 2 && ti.Dims[1] < 1<<31 {
		c.Vocab = int(ti.Dims[1])
	}
	// Mistral-style models: llama.cpp's <arch>.attention.sliding_window.
	c.SlidingWindow = geti(arch+".attention.sliding_window", 0)
	if cla, err := f.Bool(CLAKey); err == nil {
		c.CLA = cla
	}
	if firstErr != nil {
		return c, firstErr
	}
	return c, c.Validate()
}

// tensorSource returns a described tensor's weight.
type tensorSource func(ti gguf.TensorInfo) (*weight, error)

// heapSource reads and dequantizes tensors to float32 through f.
func heapSource(f *gguf.File) tensorSource {
	return func(ti gguf.TensorInfo) (*weight, error) {
		data, err := f.TensorData(ti.Name)
		if err != nil {
			return nil, err
		}
		rows, cols := matrixShape(ti.Dims)
		return f32Weight(rows, cols, data), nil
	}
}

// mappedSource views tensors in place in data, the whole file's bytes.
func mappedSource(f *gguf.File, data []byte) tensorSource {
	return func(ti gguf.TensorInfo) (*weight, error) {
		off := f.DataOffset + int64(ti.Offset)
		if ti.Size < 0 || off < 0 || off+ti.Size > int64(len(data)) {
			return nil, fmt.Errorf("%w: tensor %q lies outside the file", gguf.ErrTruncated, ti.Name)
		}
		rows, cols := matrixShape(ti.Dims)
		w, err := rawWeight(ti.Type, rows, cols, data[off:off+ti.Size:off+ti.Size])
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", ti.Name, err)
		}
		return w, nil
	}
}

// matrixShape maps ggml dims ([cols, rows] or [n]) to rows, cols.
func matrixShape(dims []uint64) (rows, cols int) {
	if len(dims) == 1 {
		return 1, int(dims[0])
	}
	return int(dims[1]), int(dims[0])
}

// LoadOptions tune Load.
type LoadOptions struct {
	// Tokenizer tunes how the GGUF's tokenizer is built, e.g.
	// AcceptUnknownPre (worker flag --allow-unknown-pretokenizer).
	Tokenizer tokenizer.Options
	// MapFile uses the file's pages in place (mmap) instead of a private
	// copy: faster to load, shared with other processes, but a virtual
	// machine may drop the mapping's page-table entries while the process
	// idles, and the first forward pass after a pause then refaults every
	// weight page (worker flag --mmap).
	MapFile bool
}

func fromGGUF(ctx context.Context, f *gguf.File, src tensorSource, o LoadOptions) (*Model, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	m := &Model{cfg: cfg}
	m.name, _ = f.String("general.name")
	// Weights are described by an unloaded model's tensor list (shapes and
	// names), then filled from the file.
	m.embed = &weight{}
	m.layers = make([]layer, cfg.Layers)
	for l := range m.layers {
		m.layers[l] = layer{wq: &weight{}, wo: &weight{}, wGate: &weight{}, wUp: &weight{}, wDown: &weight{}}
		if cfg.producesKV(l) {
			m.layers[l].wk, m.layers[l].wv = &weight{}, &weight{}
		}
	}
	_, hasOutput := f.Tensor("output.weight")
	m.tied = !hasOutput
	load := func(name string, dims []uint64) (*weight, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ti, ok := f.Tensor(name)
		if !ok {
			return nil, fmt.Errorf("%w: missing tensor %q", ErrBadWeights, name)
		}
		if !slices.Equal(ti.Dims, dims) {
			return nil, fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrBadWeights, name, ti.Dims, dims)
		}
		if ti.Size < 0 {
			return nil, fmt.Errorf("%w: tensor %q has type %v", gguf.ErrUnsupported, name, ti.Type)
		}
		return src(ti)
	}
	// Walk the canonical tensor list; each entry's target is replaced.
	mats, vecs := m.tensorTargets()
	for _, t := range m.tensors() {
		w, err := load(t.name, t.dims)
		if err != nil {
			return nil, err
		}
		if p, ok := vecs[t.name]; ok {
			*p = w.values()
			continue
		}
		*mats[t.name] = w
	}
	if m.tied {
		m.output = m.embed
	}
	m.tok, err = tokenizer.FromGGUFOptions(f, o.Tokenizer)
	if err != nil {
		return nil, err
	}
	m.template = tokenizer.TemplateFromGGUF(f, m.tok, o.Tokenizer.Warn)
	if m.tok.VocabSize() > cfg.Vocab {
		return nil, fmt.Errorf("%w: tokenizer has %d tokens, model vocab %d", ErrBadWeights, m.tok.VocabSize(), cfg.Vocab)
	}
	return m, nil
}

// tensorTargets maps GGUF tensor names to the model fields holding them:
// matrices and (float32) vectors.
func (m *Model) tensorTargets() (map[string]**weight, map[string]*[]float32) {
	mats := map[string]**weight{
		"token_embd.weight": &m.embed,
		"output.weight":     &m.output,
	}
	vecs := map[string]*[]float32{"output_norm.weight": &m.outNorm}
	for i := range m.layers {
		l := &m.layers[i]
		p := fmt.Sprintf("blk.%d.", i)
		vecs[p+"attn_norm.weight"] = &l.attnNorm
		mats[p+"attn_q.weight"] = &l.wq
		vecs[p+"attn_q.bias"] = &l.bq
		vecs[p+"attn_k.bias"] = &l.bk
		vecs[p+"attn_v.bias"] = &l.bv
		mats[p+"attn_k.weight"] = &l.wk
		mats[p+"attn_v.weight"] = &l.wv
		mats[p+"attn_output.weight"] = &l.wo
		vecs[p+"ffn_norm.weight"] = &l.ffnNorm
		mats[p+"ffn_gate.weight"] = &l.wGate
		mats[p+"ffn_up.weight"] = &l.wUp
		mats[p+"ffn_down.weight"] = &l.wDown
	}
	return mats, vecs
}

// WriteGGUF writes the model as a GGUF file of its architecture with matrices encoded as
// typ (F32, F16, BF16, Q8_0 or Q4_0; 1-D norm weights are always F32).
// Tokenizer metadata is written for the byte-level tokenizer and the
// default model's word pieces only.
func (m *Model) WriteGGUF(w io.Writer, typ gguf.TensorType) error {
	gw, err := m.ggufWriter(typ, m.tensors())
	if err != nil {
		return err
	}
	if _, err := gw.WriteTo(w); err != nil {
		return fmt.Errorf("model: write: %w", err)
	}
	return nil
}

// ggufWriter prepares a GGUF writer with the model's metadata and the given
// tensors.
func (m *Model) ggufWriter(typ gguf.TensorType, tensors []namedTensor) (*gguf.Writer, error) {
	c := m.cfg
	a := c.arch()
	gw := gguf.NewWriter()
	kv := []struct {
		k string
		v any
	}{
		{"general.architecture", a},
		{"general.name", m.name},
		{a + ".context_length", uint32(c.ContextLen)},
		{a + ".embedding_length", uint32(c.Dim)},
		{a + ".block_count", uint32(c.Layers)},
		{a + ".feed_forward_length", uint32(c.FFNDim)},
		{a + ".attention.head_count", uint32(c.Heads)},
		{a + ".attention.head_count_kv", uint32(c.KVHeads)},
		{a + ".attention.key_length", uint32(c.HeadDim)},
		{a + ".attention.value_length", uint32(c.HeadDim)},
		{a + ".rope.dimension_count", uint32(c.HeadDim)},
		{a + ".attention.layer_norm_rms_epsilon", float32(c.NormEps)},
		{a + ".rope.freq_base", float32(c.RopeTheta)},
		{a + ".vocab_size", uint32(c.Vocab)},
	}
	if c.ropeScale() != 1 {
		kv = append(kv, struct {
			k string
			v any
		}{a + ".rope.scaling.type", "linear"}, struct {
			k string
			v any
		}{a + ".rope.scaling.factor", float32(c.RopeScale)})
	}
	if c.SlidingWindow > 0 {
		kv = append(kv, struct {
			k string
			v any
		}{a + ".attention.sliding_window", uint32(c.SlidingWindow)})
	}
	if c.CLA {
		kv = append(kv, struct {
			k string
			v any
		}{CLAKey, true})
	}
	for _, e := range kv {
		if err := gw.SetKV(e.k, e.v); err != nil {
			return nil, err
		}
	}
	if b, ok := m.tok.(tokenizer.Bytes); ok {
		if err := tokenizer.WriteBytesGGUF(gw, b); err != nil {
			return nil, err
		}
	}
	if v := m.vocab; v != nil {
		for _, e := range []struct {
			k string
			v any
		}{
			{"tokenizer.ggml.model", "gpt2"},
			{"tokenizer.ggml.pre", v.Pre},
			{"tokenizer.ggml.tokens", v.Tokens},
			{"tokenizer.ggml.token_type", v.Types},
			{"tokenizer.ggml.merges", v.Merges},
			{"tokenizer.ggml.bos_token_id", uint32(v.BOS)},
			{"tokenizer.ggml.eos_token_id", uint32(v.EOS)},
			{"tokenizer.ggml.add_bos_token", v.AddBOS},
		} {
			if err := gw.SetKV(e.k, e.v); err != nil {
				return nil, err
			}
		}
	}
	if m.template != nil {
		if err := gw.SetKV("tokenizer.chat_template", templateSource(m.template)); err != nil {
			return nil, err
		}
	}
	for _, t := range tensors {
		tt := typ
		if len(t.dims) == 1 {
			tt = gguf.F32
		}
		if err := gw.AddTensor(t.name, tt, t.dims, t.w.values()); err != nil {
			return nil, fmt.Errorf("model: write: %w", err)
		}
	}
	return gw, nil
}

// templateSource returns the Jinja source TemplateFromGGUF maps back to t.
func templateSource(t tokenizer.Template) string { return tokenizer.BuiltinSource(t) }
