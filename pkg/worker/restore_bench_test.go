package worker

import (
	"context"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
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
// 125M model's KV shape, for each codec a worker may use. The sequence
// is released after each restore, as a request releases it.
//
// For each codec, "batch" is the restore before issue 13's overlap (fetch
// every block with FetchRaw, then import them), kept here as the baseline
// the worker's path ("stream": each block imported as it arrives, into
// recycled buffers as without a hot tier; "stream-tier": with a tier, into
// recycled buffers too, the tier's copy made after the restore, as a
// request makes it after its first token) is measured against;
// "stream-fresh" is the tier path before that (a fresh buffer per block,
// which the tier keeps). "alternate" runs all four in turn in each
// iteration, which a loaded machine's drift hits alike; for stream-tier
// it reports the restore (the time to the first token) and the copy
// apart:
//
//	go test -run XXX -bench RestoreRemote/f16 -count 5 -cpuprofile cpu.out ./pkg/worker/
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
			// wt has a hot tier that refuses every block (a 1-byte
			// budget): its restores fetch everything, into buffers of
			// their own as with a real tier, where w (no tier) recycles
			// them.
			wt := newWorker(b, Config{Model: m, Cache: c, Codec: codec, HotCacheBytes: 1})
			var held heldBlocks
			one := func(b *testing.B, mode string, t *Timings) {
				*t = Timings{}
				seq := m.NewSequence(w.BlockTokens())
				var got int
				switch mode {
				case "batch":
					got = restoreBatch(b, w, c, seq, prompt, t)
				case "stream":
					got = w.restore(context.Background(), w.ns, seq, prompt, t, nil)
				case "stream-tier":
					got = wt.restore(context.Background(), wt.ns, seq, prompt, t, &held)
				case "stream-fresh":
					got = restoreFresh(b, wt, c, seq, prompt, t)
				}
				if got != n/w.BlockTokens() {
					b.Fatalf("restored %d blocks", got)
				}
				seq.Release() // as a request does: the next one reuses its KV buffers
			}
			for _, mode := range []string{"batch", "stream", "stream-tier", "stream-fresh"} {
				b.Run(mode, func(b *testing.B) {
					var t Timings
					var lookup, fetch, imp float64
					start, cpu0 := time.Now(), cpuTime()
					for b.Loop() {
						one(b, mode, &t)
						wt.keepFetched(&held)
						lookup += t.LookupMS
						fetch += t.FetchMS
						imp += t.ImportMS
					}
					el := time.Since(start)
					b.ReportMetric(lookup/float64(b.N), "lookup_ms")
					b.ReportMetric(fetch/float64(b.N), "fetch_ms")
					b.ReportMetric(imp/float64(b.N), "import_ms")
					b.ReportMetric(ms(cpuTime()-cpu0)/float64(b.N), "cpu_ms")
					b.ReportMetric(float64(t.FetchedBytes)/1e6, "MB")
					b.ReportMetric(float64(t.FetchedBytes*b.N)/el.Seconds()/1e6, "MB/s")
				})
			}
			// Both in turn, one restore each per iteration, so that a
			// loaded machine's drift hits both alike: wall and process
			// CPU time (user + system, the node's included) of each.
			b.Run("alternate", func(b *testing.B) {
				var t Timings
				var wall, cpu [5]time.Duration
				for b.Loop() {
					for k, mode := range []string{"batch", "stream", "stream-tier", "stream-fresh"} {
						t0, c0 := time.Now(), cpuTime()
						one(b, mode, &t)
						wall[k] += time.Since(t0)
						cpu[k] += cpuTime() - c0
						if mode == "stream-tier" {
							t0, c0 = time.Now(), cpuTime()
							wt.keepFetched(&held)
							wall[4] += time.Since(t0)
							cpu[4] += cpuTime() - c0
						}
					}
				}
				per := func(d time.Duration) float64 { return ms(d) / float64(b.N) }
				b.ReportMetric(per(wall[0]), "batch_ms")
				b.ReportMetric(per(wall[1]), "stream_ms")
				b.ReportMetric(per(cpu[0]), "batch_cpu_ms")
				b.ReportMetric(per(cpu[1]), "stream_cpu_ms")
				b.ReportMetric(per(wall[2]), "tier_ms")
				b.ReportMetric(per(cpu[2]), "tier_cpu_ms")
				b.ReportMetric(per(wall[4]), "tier_copy_ms")
				b.ReportMetric(per(cpu[4]), "tier_copy_cpu_ms")
				b.ReportMetric(per(wall[3]), "fresh_ms")
				b.ReportMetric(per(cpu[3]), "fresh_cpu_ms")
				b.ReportMetric(float64(wall[1])/float64(wall[0]), "stream/batch")
				b.ReportMetric(float64(wall[2])/float64(wall[3]), "tier/fresh")
				b.ReportMetric(float64(wall[2]+wall[4])/float64(wall[3]), "tier+copy/fresh")
			})
		})
	}
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// restoreBatch is restore's remote path as it was before the overlap:
// lookup, FetchRaw of every block, then decode, check and import of each.
func restoreBatch(b *testing.B, w *Worker, c *client.Client, seq *model.Sequence, prompt []int, t *Timings) int {
	bt := w.cfg.BlockTokens
	keys := prefix.BlockKeys(w.ns, toU32(prompt[:len(prompt)/bt*bt]), bt)
	seq.Reserve(len(prompt) + 1)
	ctx := context.Background()
	t0 := time.Now()
	n, err := c.Lookup(ctx, w.ns, keys)
	t.LookupMS = msSince(t0)
	if err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	blocks, err := c.FetchRaw(ctx, w.ns, keys[:n], nil)
	if err != nil {
		b.Fatal(err)
	}
	t2 := time.Now()
	var kv kvblock.KV
	for i, blk := range blocks {
		h, err := kvblock.Decode(blk, &kv)
		if err == nil {
			err = w.checkBlock(&h, &kv, i)
		}
		if err == nil {
			err = seq.ImportBlock(i, kv.K, kv.V)
		}
		if err != nil {
			b.Fatal(err)
		}
		w.hot.put(w.ns, keys[i], &h, blk)
		t.FetchedBlocks++
		t.FetchedBytes += len(blk)
	}
	t.ImportMS = msSince(t2)
	t.FetchMS = msSince(t1)
	if seq.Len() == len(prompt) {
		seq.Truncate(len(prompt) - 1)
	}
	return len(blocks)
}

// restoreFresh is restoreRemote's path with a hot tier before the tier's
// copy moved after the first token: every block fetched into a fresh
// buffer of its own, which goes into the tier as it is imported.
func restoreFresh(b *testing.B, w *Worker, c *client.Client, seq *model.Sequence, prompt []int, t *Timings) int {
	bt := w.cfg.BlockTokens
	keys := prefix.BlockKeys(w.ns, toU32(prompt[:len(prompt)/bt*bt]), bt)
	seq.Reserve(len(prompt) + 1)
	ctx := context.Background()
	t0 := time.Now()
	n, err := c.Lookup(ctx, w.ns, keys)
	t.LookupMS = msSince(t0)
	if err != nil {
		b.Fatal(err)
	}
	t1 := time.Now()
	var kv kvblock.KV
	got, err := c.FetchRawFunc(ctx, w.ns, keys[:n], nil, func(i int, blk []byte) error {
		h, err := kvblock.Inspect(blk)
		if err == nil {
			err = w.checkBlock(&h, &kv, i)
		}
		if err == nil {
			err = importBlock(seq, i, &h, blk, &kv)
		}
		if err != nil {
			return err
		}
		t.FetchedBlocks++
		t.FetchedBytes += len(blk)
		w.hot.put(w.ns, keys[i], &h, blk)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	t.FetchMS = msSince(t1)
	if seq.Len() == len(prompt) {
		seq.Truncate(len(prompt) - 1)
	}
	return got
}
