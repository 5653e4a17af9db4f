package worker

import (
	"context"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
)

// kvShapeOf125M has the KV shape of internal/enginebench's 125M model (12
// layers, 4 KV heads of 64) with every other dimension tiny: restoring a
// prefix costs the same, building the model costs nothing.
func kvShapeOf125M() model.Config {
	return model.Config{Layers: 12, Dim: 256, Heads: 4, KVHeads: 4, HeadDim: 64, FFNDim: 64,
		Vocab: 512, RopeTheta: 10000, NormEps: 1e-5, ContextLen: 4096}
}

// BenchmarkRestoreRemote is the remote full hit of issue 13 without the
// one-token prefill: lookup, fetch over a real node's data plane on
// loopback, decode and import of a 1024-token prefix (64 blocks) of the
// 125M model's KV shape, for each codec a worker may use.
//
//	go test -run XXX -bench RestoreRemote -cpuprofile cpu.out ./pkg/worker/
func BenchmarkRestoreRemote(b *testing.B) {
	m, err := model.Synthetic("kv-125m", kvShapeOf125M(), 7)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1024
	for _, codec := range []kvblock.Codec{kvblock.Int8, kvblock.F16} {
		b.Run(codec.String(), func(b *testing.B) {
			node := testnode.Start(b, cachenode.Config{NoSync: true, DataListen: "127.0.0.1:0"})
			c := newClient(b, node.Addr())
			w := newWorker(b, Config{Model: m, Cache: c, Codec: codec})
			prompt := make([]int, n)
			for i := range prompt {
				prompt[i] = (i*37 + 11) % 512
			}
			if _, err := w.Generate(context.Background(), Request{Prompt: prompt, MaxTokens: 1}); err != nil {
				b.Fatal(err)
			}
			flush(b, w)
			var t Timings
			var lookup, fetch, imp float64
			start := time.Now()
			for b.Loop() {
				t = Timings{}
				if got := w.restore(context.Background(), w.ns, m.NewSequence(w.BlockTokens()), prompt, &t); got != n/w.BlockTokens() {
					b.Fatalf("restored %d blocks", got)
				}
				lookup += t.LookupMS
				fetch += t.FetchMS
				imp += t.ImportMS
			}
			el := time.Since(start)
			b.ReportMetric(lookup/float64(b.N), "lookup_ms")
			b.ReportMetric(fetch/float64(b.N), "fetch_ms")
			b.ReportMetric(imp/float64(b.N), "import_ms")
			b.ReportMetric(float64(t.FetchedBytes)/1e6, "MB")
			b.ReportMetric(float64(t.FetchedBytes*b.N)/el.Seconds()/1e6, "MB/s")
		})
	}
}
