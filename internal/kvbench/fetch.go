package kvbench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fetchPhase times warm fetches of d's requests at cfg.Concurrency,
// backends interleaved round by round.
// It returns the fetch row. after, if not nil, runs after each round with
// that round's kvcache fetch rate (the decode rounds, see decodeBench).
func (r *runner) fetchPhase(ctx context.Context, d *dataset, phase string, after func(kvGBs float64)) (Row, error) {
	bs := r.backends()
	cols := make([]int, len(bs))
	pids := make([]int, len(bs))
	for i := range bs {
		cols[i], pids[i] = i, r.pids[i]
	}
	if r.kvRPC != nil { // right after kvcache, so the two are measured back to back
		bs = slices.Insert(bs, 1, r.kvRPC)
		cols = slices.Insert(cols, 1, colGRPC)
		pids = slices.Insert(pids, 1, r.pids[0])
	}
	// Warm up each backend (connections, buffers, page cache).
	for _, b := range bs {
		r.p.begin(fmt.Sprintf("%s: warm up %s", phase, b.Name()), 0)
		_, err := r.fetchFor(ctx, b, d, 500*time.Millisecond, 99)
		r.p.end()
		if err != nil {
			return Row{}, err
		}
	}
	gbs := make([][]float64, len(bs))
	cpus := make([][]float64, len(bs))
	for round := range r.cfg.Rounds {
		for bi, b := range bs {
			r.p.begin(fmt.Sprintf("%s c=%d: %s (round %d)", phase, r.cfg.Concurrency, b.Name(), round+1), 0)
			c0 := cpuTime(pids[bi])
			v, err := r.fetchFor(ctx, b, d, r.cfg.Duration, uint64(round))
			cpu := cpuTime(pids[bi]) - c0
			r.p.end()
			if err != nil {
				return Row{}, err
			}
			gbs[bi] = append(gbs[bi], v)
			// Core-seconds per GB, client and server together.
			cpus[bi] = append(cpus[bi], cpu.Seconds()/(v*r.cfg.Duration.Seconds()))
			r.rep.Samples[fmt.Sprintf("%s/%s", phase, b.Name())] = gbs[bi]
			r.rep.Samples[fmt.Sprintf("%s/%s/cpu_s_per_gb", phase, b.Name())] = cpus[bi]
		}
		if after != nil {
			after(gbs[0][round])
		}
	}
	ph := fmt.Sprintf("%s, c=%d", phase, r.cfg.Concurrency)
	row, tok := newRow(ph, "fetch", "GB/s"), newRow(ph, "KV tokens served", "k tokens/s")
	cpuRow := newRow(ph, "CPU per GB, client+server", "core-s/GB")
	cpuRow.Lower = true
	for bi := range bs {
		m := Median(gbs[bi])
		setCol(&row, cols[bi], m)
		setCol(&tok, cols[bi], m*1e9/d.g.TokenBytes()/1e3)
		if pids[bi] != 0 || r.cfg.NodeMode == "inproc" && (cols[bi] == 0 || cols[bi] == colGRPC) {
			setCol(&cpuRow, cols[bi], Median(cpus[bi]))
		}
	}
	if d.name == "target" {
		row.Target = ">= 2 GB/s and >= 1.5x best Redis"
		r.targetFetchCPU = cpuRow.KVCache
	}
	r.rep.Rows = append(r.rep.Rows, row, tok, cpuRow)
	return row, nil
}

// fetchFor runs cfg.Concurrency fetchers for dur and returns GB/s.
func (r *runner) fetchFor(ctx context.Context, b Backend, d *dataset, dur time.Duration, seed uint64) (float64, error) {
	var total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, r.cfg.Concurrency)
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	deadline := t0.Add(dur)
	for w := range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var dst [][]byte
			for time.Now().Before(deadline) && fctx.Err() == nil {
				keys := d.fetches[rng.IntN(len(d.fetches))]
				n, nb, err := b.Fetch(fctx, d.ns, keys, &dst)
				if err == nil && n != len(keys) {
					err = fmt.Errorf("got %d of %d blocks", n, len(keys))
				}
				if err != nil {
					errc <- fmt.Errorf("%s fetch: %w", b.Name(), err)
					cancel()
					return
				}
				total.Add(nb)
				r.p.add(1, nb)
			}
		}()
	}
	wg.Wait()
	el := time.Since(t0)
	select {
	case err := <-errc:
		return 0, err
	default:
	}
	return float64(total.Load()) / el.Seconds() / 1e9, nil
}
