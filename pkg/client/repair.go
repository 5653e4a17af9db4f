package client

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Read repair: when a read finds a block on one owner after another owner
// answered that it does not have it, the block is copied to that owner in
// the background. Jobs carry only keys and node names (the repairer
// re-reads the block from the source), so the queue's memory is bounded
// by its length, not by block sizes, and the read path only enqueues.

// RepairStats counts read repairs.
type RepairStats struct {
	// Queued repairs; Repaired copied; Failed could not be copied;
	// Dropped did not fit in the queue or duplicated one in flight.
	Queued, Repaired, Failed, Dropped int64
}

type repairJob struct {
	ns       prefix.Namespace
	key      prefix.Key
	src, dst string
}

type repairer struct {
	copy                              func(context.Context, repairJob) error
	log                               *slog.Logger
	q                                 chan repairJob
	mu                                sync.Mutex
	inflight                          map[repairJob]struct{}
	closed                            bool
	queued, repaired, failed, dropped atomic.Int64
	cancel                            context.CancelFunc
	wg                                sync.WaitGroup
}

const repairWorkers = 2

// start runs the repair workers over a queue of n jobs (none when n < 0);
// copy does one job.
func (r *repairer) start(n int, copy func(context.Context, repairJob) error, log *slog.Logger) {
	if n < 0 {
		return
	}
	r.copy, r.log = copy, log
	r.q = make(chan repairJob, n)
	r.inflight = map[repairJob]struct{}{}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for range repairWorkers {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for j := range r.q {
				if err := r.copy(ctx, j); err != nil {
					r.failed.Add(1)
					r.log.Debug("read repair failed", "key", j.key.String(), "from", j.src, "to", j.dst, "err", err)
				} else {
					r.repaired.Add(1)
				}
				r.mu.Lock()
				delete(r.inflight, j)
				r.mu.Unlock()
			}
		}()
	}
}

// schedule enqueues a repair unless an identical one is in flight or the
// queue is full. It never blocks.
func (r *repairer) schedule(j repairJob) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.q == nil || r.closed {
		return
	}
	if _, dup := r.inflight[j]; dup {
		r.dropped.Add(1)
		return
	}
	select {
	case r.q <- j:
		r.inflight[j] = struct{}{}
		r.queued.Add(1)
	default:
		r.dropped.Add(1)
	}
}

// stop abandons queued repairs: they are an optimisation, never owed.
func (r *repairer) stop() {
	r.mu.Lock()
	if r.q == nil || r.closed {
		r.mu.Unlock()
		return
	}
	r.closed = true
	close(r.q)
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// copyBlock copies one block from j.src to j.dst: a repairer job.
func (c *Client) copyBlock(ctx context.Context, j repairJob) error {
	keys := []prefix.Key{j.key}
	var bs *blockSet
	err := c.calls.attempt(ctx, j.src, func(ctx context.Context, n *peer) error {
		// A lone block: its place in the chain was checked by the read
		// that scheduled the repair; the blockSet checks it is intact.
		bs = newBlockSet(keys, []int{0}, false, c.log, nil)
		return getStream(ctx, n.stub, j.ns, bs)
	})
	if err != nil {
		return fmt.Errorf("read from %s: %w", j.src, err)
	}
	if !bs.ok[0] {
		if bs.got[0] != nil {
			return fmt.Errorf("read from %s: %w", j.src, ErrCorrupt)
		}
		return fmt.Errorf("read from %s: block gone", j.src)
	}
	blocks := []Block{{Key: j.key, Data: bs.got[0]}}
	var results []*kvcachev1.PutResult
	err = c.calls.attempt(ctx, j.dst, func(ctx context.Context, n *peer) (err error) {
		results, err = putStream(ctx, n.stub, j.ns, blocks, []int{0}, c.cfg.ChunkBytes)
		return err
	})
	if err != nil {
		return fmt.Errorf("write to %s: %w", j.dst, err)
	}
	if len(results) != 1 || results[0].GetOutcome() == kvcachev1.PutResult_OUTCOME_REJECTED {
		return fmt.Errorf("write to %s: %w: rejected", j.dst, ErrUnavailable)
	}
	return nil
}

// RepairStats returns the read repair counters.
func (c *Client) RepairStats() RepairStats {
	r := &c.repair
	return RepairStats{Queued: r.queued.Load(), Repaired: r.repaired.Load(), Failed: r.failed.Load(), Dropped: r.dropped.Load()}
}

// repairs remembers, during one read, which owners answered without a
// block so the owner that had it can be copied back to them.
type repairs struct {
	mu     sync.Mutex
	missed []missed
}

// missed is one owner's "missing" answer for key i.
type missed struct {
	i    int
	node string
}

func (r *repairs) miss(i int, node string) {
	r.mu.Lock()
	r.missed = append(r.missed, missed{i, node})
	r.mu.Unlock()
}

// reset forgets every miss, keeping the capacity.
func (r *repairs) reset() {
	clear(r.missed)
	r.missed = r.missed[:0]
}

// flush schedules repairs for keys [0, n) found on from[i], onto the
// write owners of the key (by picker) that missed it.
func (r *repairer) flush(rep *repairs, picker Picker, ns prefix.Namespace, keys []prefix.Key, n int, from []string) {
	if len(rep.missed) == 0 || r.q == nil {
		return
	}
	var owners []string
	last := -1
	for _, m := range rep.missed {
		i := m.i
		if i >= n || from[i] == "" || m.node == from[i] {
			continue
		}
		if i != last {
			owners, last = picker.Owners(keys[i], owners), i
		}
		if slices.Contains(owners, m.node) {
			r.schedule(repairJob{ns: ns, key: keys[i], src: from[i], dst: m.node})
		}
	}
}
