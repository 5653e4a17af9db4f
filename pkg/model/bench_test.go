package model

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
)

var (
	benchOnce  sync.Once
	benchModel *Model
)

func defaultModel() *Model {
	benchOnce.Do(func() { benchModel = Default(nil) })
	return benchModel
}

// flops returns the floating-point operations of prefilling n tokens after
// p0 cached ones (multiply-adds count 2; attention included).
func flops(c Config, p0, n int) float64 {
	q, kv := c.Heads*c.HeadDim, c.KVDim()
	var perTok float64
	for l := 0; l < c.Layers; l++ {
		perTok += float64(c.Dim * q * 2) // wq, wo
		if c.producesKV(l) {
			perTok += float64(2 * c.Dim * kv)
		}
		perTok += float64(3 * c.Dim * c.FFNDim)
	}
	total := 2 * perTok * float64(n)
	// Attention: QK and PV, 2 flops each per key per head dim.
	keys := float64(n)*float64(p0) + float64(n)*float64(n+1)/2
	total += float64(c.Layers) * float64(c.Heads) * keys * float64(c.HeadDim) * 4
	return total + 2*float64(c.Dim*c.Vocab)
}

func BenchmarkPrefill(b *testing.B) {
	m := defaultModel()
	toks := prompt(256)
	ctx := context.Background()
	for b.Loop() {
		if _, err := m.NewSequence(16).Prefill(ctx, toks); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(len(toks)*b.N)/sec, "tok/s")
	b.ReportMetric(flops(m.Config(), 0, len(toks))*float64(b.N)/sec/1e9, "GFLOP/s")
}

func BenchmarkDecode(b *testing.B) {
	m := defaultModel()
	ctx := context.Background()
	s := m.NewSequence(16)
	if _, err := s.Prefill(ctx, prompt(256)); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime()
	for b.Loop() {
		if s.Len() >= m.Config().ContextLen {
			s.Truncate(256)
		}
		if _, err := s.Decode(ctx, 65); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
	reportCPU(b, cpu0)
}

// BenchmarkDecodeAttention is one layer of a decode step's attention at
// position 1024 on the bench model's shape (12 heads, 4 KV heads of 64):
// tiles is the 4-key tile path (f32Block, then Go loops for scale and
// max), qk1 the one-row score kernel. Alternate them with -count.
func BenchmarkDecodeAttention(b *testing.B) {
	const p0, heads, kvHeads, hd = 1024, 12, 4, 64
	r := rand.New(rand.NewPCG(1, 2))
	q := randSlice(r, heads*hd)
	kc := randSlice(r, (p0+1)*kvHeads*hd)
	vc := randSlice(r, (p0+1)*kvHeads*hd)
	out := make([]float32, heads*hd)
	tiles := *active
	tiles.qk1 = nil
	for _, ks := range []*kernels{&tiles, active} {
		name := "qk1"
		if ks.qk1 == nil {
			name = "tiles"
		}
		b.Run(name, func(b *testing.B) {
			cpu0 := cpuTime()
			for b.Loop() {
				ks.attention(out, q, kc, vc, p0, 1, heads, kvHeads, hd)
			}
			reportCPU(b, cpu0)
		})
	}
}

// BenchmarkHitStep is the one-token step of a full cache hit: decode at
// position 1023 of a 1024-token prompt (the KV imported, the last token
// recomputed), on the default model, with the tile attention path and
// with qk1. cpu_us/op is the figure on a loaded machine.
func BenchmarkHitStep(b *testing.B) {
	m := defaultModel()
	ctx := context.Background()
	s := m.NewSequence(16)
	if _, err := s.Prefill(ctx, prompt(1023)); err != nil {
		b.Fatal(err)
	}
	tiles := *active
	tiles.qk1 = nil
	for _, ks := range []*kernels{&tiles, active} {
		name := "qk1"
		if ks.qk1 == nil {
			name = "tiles"
		}
		b.Run(name, func(b *testing.B) {
			withKernels(ks, func() {
				cpu0 := cpuTime()
				for b.Loop() {
					s.Truncate(1023)
					if _, err := s.Decode(ctx, 65); err != nil {
						b.Fatal(err)
					}
				}
				reportCPU(b, cpu0)
			})
		})
	}
}

// BenchmarkImportHalf weighs storing the KV as f16 (issue 13, step 3):
// convert is what ImportBlockHalf does for a 1024-token prefix of the 125M
// model's KV (12.6 MB of f16 words into 25 MB of float32), copy is what an
// f16 KV would do instead (12.6 MB copied).
func BenchmarkImportHalf(b *testing.B) {
	const n = 1024 * 12 * 4 * 64 * 2 // K and V values
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 2*n)
	for i := range src {
		src[i] = byte(r.Uint32() & 0x3b) // finite
	}
	f32 := make([]float32, n)
	u16 := make([]byte, 2*n)
	b.Run("convert", func(b *testing.B) {
		cpu0 := cpuTime()
		for b.Loop() {
			active.halfTo(f32, src)
		}
		reportCPU(b, cpu0)
	})
	b.Run("copy", func(b *testing.B) {
		cpu0 := cpuTime()
		for b.Loop() {
			copy(u16, src)
		}
		reportCPU(b, cpu0)
	})
}

// BenchmarkDecodeAttention12 is BenchmarkDecodeAttention over 12 layers'
// KV (25 MB), as a decode step reads it: out of the caches.
func BenchmarkDecodeAttention12(b *testing.B) {
	const p0, heads, kvHeads, hd, layers = 1024, 12, 4, 64, 12
	r := rand.New(rand.NewPCG(1, 2))
	q := randSlice(r, heads*hd)
	n := (p0 + 1) * kvHeads * hd
	kc, vc := randSlice(r, layers*n), randSlice(r, layers*n)
	out := make([]float32, heads*hd)
	cpu0 := cpuTime()
	for b.Loop() {
		for l := range layers {
			attention(out, q, kc[l*n:(l+1)*n], vc[l*n:(l+1)*n], p0, 1, heads, kvHeads, hd)
		}
	}
	reportCPU(b, cpu0)
}
