package kvbench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// populate appends d to every backend with cfg.Writers writers and records
// the append rate (distinct bytes over wall time) and, for a workload
// replay, the hit ratio.
func (r *runner) populate(ctx context.Context, d *dataset, phase string) error {
	total := d.bytes()
	row := newRow(fmt.Sprintf("%s, %d writers", phase, r.cfg.Writers), "append", "GB/s")
	hitRow := newRow(fmt.Sprintf("workload replay, %d writers", r.cfg.Writers), fmt.Sprintf("hit ratio (ideal %.1f%%)", 100*r.rep.IdealHit), "%")
	for bi, b := range r.backends()[:r.populateBackends()] {
		r.p.begin(fmt.Sprintf("%s: %s", phase, b.Name()), int64(len(d.appends)))
		var next atomic.Int64
		var hits, asked atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, r.cfg.Writers)
		t0 := time.Now()
		for range r.cfg.Writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(d.appends) || ctx.Err() != nil {
						return
					}
					idx := d.appends[i]
					n := 0
					if d.lookup {
						keys := make([]prefix.Key, len(idx))
						for j, bi := range idx {
							keys[j] = d.blocks[bi].Key
						}
						var err error
						if n, err = b.Lookup(ctx, d.ns, keys); err != nil {
							errc <- fmt.Errorf("%s lookup: %w", b.Name(), err)
							return
						}
						hits.Add(int64(n))
						asked.Add(int64(len(idx)))
					}
					var blocks []client.Block
					var nb int64
					for _, bi := range idx[n:] {
						blocks = append(blocks, client.Block{Key: d.blocks[bi].Key, Data: d.data[bi]})
						nb += int64(len(d.data[bi]))
					}
					if len(blocks) > 0 {
						if err := b.Put(ctx, d.ns, blocks); err != nil {
							errc <- fmt.Errorf("%s put: %w", b.Name(), err)
							return
						}
					}
					r.p.add(1, nb)
				}
			}()
		}
		wg.Wait()
		el := time.Since(t0)
		r.p.end()
		select {
		case err := <-errc:
			return err
		default:
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		gbs := float64(total) / el.Seconds() / 1e9
		setCol(&row, bi, gbs)
		if d.lookup {
			setCol(&hitRow, bi, 100*float64(hits.Load())/float64(max(1, asked.Load())))
		}
	}
	if d.lookup {
		// A replay appends only what its lookup missed, and concurrent
		// requests for a new prefix wait on each other's appends of the
		// same blocks: a workload figure, not the store's append rate.
		row.Metric = "append (replay: lookup, then append the misses)"
	} else {
		row.Target = ">= 0.5 GB/s durable (kvcache)"
	}
	r.rep.Rows = append(r.rep.Rows, row)
	if d.lookup {
		r.rep.Rows = append(r.rep.Rows, hitRow)
	}
	return nil
}
