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

// decodePhase measures Decode of int8 and int4 blocks of the workload
// geometry, in encoded bytes per second, to compare with what a fetch
// delivers: on one core, and on all cores (GOMAXPROCS goroutines, each
// decoding its own copy of the block), the parallelism a fetch has.
func (r *runner) decodePhase() {
	for _, c := range []kvblock.Codec{kvblock.Int8, kvblock.Int4} {
		g := r.cfg.Geometry
		g.Codec = c
		enc := NewEncoder(g, 5)
		// A block past the sink tokens: the common case.
		blk, err := enc.Encode(nil, Block{Seed: 1, Pos: uint32(4 * g.BlockTokens), HasParent: true, Parent: prefix.Key{1}})
		if err != nil {
			continue
		}
		all := runtime.GOMAXPROCS(0)
		for _, procs := range []int{1, all} {
			cores := "1 core"
			if procs > 1 {
				cores = fmt.Sprintf("all cores (%d)", procs)
			}
			r.p.begin(fmt.Sprintf("decode %s, %s", c, cores), 0)
			var total atomic.Int64
			var wg sync.WaitGroup
			t0 := time.Now()
			for range procs {
				own := bytes.Clone(blk)
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
			r.p.end()
			n := float64(total.Load())
			row := newRow(fmt.Sprintf("decode %s to float32, %s (%s blocks)", c, cores, fmtBytes(float64(len(blk)))), "decode", "GB/s")
			if procs == all {
				// Judged: a fetch has every core too. The 1-core row is
				// shown for reference.
				row.Metric = "decode, all cores"
				row.Target = "never the bottleneck of a fetch"
			}
			row.KVCache = n * float64(len(blk)) / el.Seconds() / 1e9
			tok := newRow(row.Phase, "KV tokens decoded", "k tokens/s")
			tok.KVCache = n * float64(g.BlockTokens) / el.Seconds() / 1e3
			r.rep.Rows = append(r.rep.Rows, row, tok)
			if all == 1 {
				break // one core is all cores
			}
		}
	}
}
