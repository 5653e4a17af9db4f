package kvbench

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// decodeBench measures Decode of int8 and int4 blocks of the workload
// geometry, in encoded bytes per second, to compare with what a fetch
// delivers: on one core, and on all cores (GOMAXPROCS goroutines, each
// decoding its own copy of the block), the parallelism a fetch has.
//
// The all-cores rate is compared with the fetch rate of the same run: its
// rounds run interleaved with the target dataset's fetch rounds (a decode
// round right after each fetch round), so both see the same neighbours,
// and the report gives the median of the per-round ratios decode ÷ fetch
// beside the two medians. It also gives the CPU each costs per GB, whose
// ratio does not depend on the load (under load a fetch, two processes
// with more runnable threads, gets a larger share of the machine than
// decode's GOMAXPROCS goroutines).
type decodeBench struct {
	codecs []decodeCodec
}

type decodeCodec struct {
	codec kvblock.Codec
	blk   []byte
	gbs   []float64 // all-cores GB/s per round
	cpu   []float64 // core-s per GB per round
	ratio []float64 // per round: gbs / that round's kvcache fetch GB/s
}

// cpuRatioMetric is the metric of the row fetch ÷ decode CPU per GB: above
// 1, decode on all cores outruns the fetch when both get the same CPU.
const cpuRatioMetric = "fetch ÷ decode CPU per GB (load-independent ratio)"

func (r *runner) newDecodeBench() *decodeBench {
	db := &decodeBench{}
	for _, c := range []kvblock.Codec{kvblock.Int8, kvblock.Int4} {
		g := r.cfg.Geometry
		g.Codec = c
		enc := NewEncoder(g, 5)
		// A block past the sink tokens: the common case.
		blk, err := enc.Encode(nil, Block{Seed: 1, Pos: uint32(4 * g.BlockTokens), HasParent: true, Parent: prefix.Key{1}})
		if err != nil {
			continue
		}
		db.codecs = append(db.codecs, decodeCodec{codec: c, blk: blk})
	}
	return db
}

// round measures every codec once on all cores; fetchGBs is the kvcache
// fetch rate of the round just before (NaN: none).
func (r *runner) decodeRound(db *decodeBench, fetchGBs float64) {
	// The fetch round leaves garbage (every fetched block); collect it
	// now so its GC does not run during, and bill, the decode round.
	runtime.GC()
	all := runtime.GOMAXPROCS(0)
	for i := range db.codecs {
		dc := &db.codecs[i]
		gbs, cpu := r.decodeFor(dc, all)
		dc.gbs = append(dc.gbs, gbs)
		dc.cpu = append(dc.cpu, cpu)
		dc.ratio = append(dc.ratio, gbs/fetchGBs)
		r.rep.Samples[fmt.Sprintf("decode %s/all cores", dc.codec)] = dc.gbs
		r.rep.Samples[fmt.Sprintf("decode %s/all cores/cpu_s_per_gb", dc.codec)] = dc.cpu
	}
}

// decodeFor decodes dc's block on procs goroutines for half a sample and
// returns GB/s of encoded bytes and core-seconds per GB (this process).
func (r *runner) decodeFor(dc *decodeCodec, procs int) (gbs, cpuPerGB float64) {
	cores := "1 core"
	if procs > 1 {
		cores = fmt.Sprintf("all cores (%d)", procs)
	}
	r.p.begin(fmt.Sprintf("decode %s, %s", dc.codec, cores), 0)
	var total atomic.Int64
	var wg sync.WaitGroup
	c0 := cpuTime()
	t0 := time.Now()
	for range procs {
		own := bytes.Clone(dc.blk)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var kv kvblock.KV
			n := int64(0)
			for time.Since(t0) < r.cfg.Duration/2 {
				if _, err := kvblock.Decode(own, &kv); err != nil {
					break
				}
				n++
				r.p.add(1, int64(len(own)))
			}
			total.Add(n)
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	cpu := cpuTime() - c0
	r.p.end()
	b := float64(total.Load()) * float64(len(dc.blk))
	return b / el.Seconds() / 1e9, cpu.Seconds() / (b / 1e9)
}

// decodeRows measures the 1-core reference rates and appends every decode
// row. Rounds not yet taken (no target dataset to interleave with) are
// taken now, without a fetch to compare with.
func (r *runner) decodeRows(db *decodeBench) {
	all := runtime.GOMAXPROCS(0)
	for i := range db.codecs {
		dc := &db.codecs[i]
		for len(dc.gbs) < r.cfg.Rounds {
			gbs, cpu := r.decodeFor(dc, all)
			dc.gbs, dc.cpu = append(dc.gbs, gbs), append(dc.cpu, cpu)
		}
		g := r.cfg.Geometry
		size := fmtBytes(float64(len(dc.blk)))
		if all > 1 {
			gbs, _ := r.decodeFor(dc, 1)
			row := newRow(fmt.Sprintf("decode %s to float32, 1 core (%s blocks)", dc.codec, size), "decode", "GB/s")
			row.KVCache = gbs
			tok := newRow(row.Phase, "KV tokens decoded", "k tokens/s")
			tok.KVCache = gbs * 1e9 / float64(len(dc.blk)) * float64(g.BlockTokens) / 1e3
			r.rep.Rows = append(r.rep.Rows, row, tok)
		}
		ph := fmt.Sprintf("decode %s to float32, all cores (%d) (%s blocks, %s)", dc.codec, all, size, kvblock.DecoderName())
		row := newRow(ph, "decode", "GB/s")
		if all > 1 {
			// Judged (against the fetch rate, in judge): a fetch has
			// every core too. The 1-core row is shown for reference.
			row.Metric = "decode, all cores"
			row.Target = "never the bottleneck of a fetch"
		}
		row.KVCache = Median(dc.gbs)
		tok := newRow(ph, "KV tokens decoded", "k tokens/s")
		tok.KVCache = row.KVCache * 1e9 / float64(len(dc.blk)) * float64(g.BlockTokens) / 1e3
		cpu := newRow(ph, "CPU per GB", "core-s/GB")
		cpu.Lower = true
		cpu.KVCache = Median(dc.cpu)
		r.rep.Rows = append(r.rep.Rows, row, tok, cpu)
		if len(dc.ratio) > 0 {
			ratio := newRow(ph, "decode ÷ fetch, same rounds (median of per-round ratios)", "x")
			ratio.KVCache = Median(dc.ratio)
			r.rep.Samples[fmt.Sprintf("decode %s/all cores/ratio_to_fetch", dc.codec)] = dc.ratio
			r.rep.Rows = append(r.rep.Rows, ratio)
		}
		if f := r.targetFetchCPU; f > 0 {
			byCPU := newRow(ph, cpuRatioMetric, "x")
			byCPU.KVCache = f / cpu.KVCache
			if all > 1 {
				byCPU.Target = ">= 1: decode needs less CPU per GB than the fetch"
			}
			r.rep.Rows = append(r.rep.Rows, byCPU)
		}
	}
}
