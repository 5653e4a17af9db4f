package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Block is one encoded block and its key.
type Block struct {
	Key  prefix.Key
	Data []byte
}

// Put stores blocks on all of their owners in parallel and returns once
// every block is durable on at least one owner. A block that no owner
// stored is reported in the error (a *RejectedError when a node refused it,
// matching ErrInvalid, ErrCorrupt or ErrFull).
func (c *Client) Put(ctx context.Context, ns prefix.Namespace, blocks []Block) error {
	_, err := c.PutStatus(ctx, ns, blocks)
	return err
}

// PutStatus is Put that also reports, per block, whether an owner already
// had it (the node answered "already present" rather than "stored").
func (c *Client) PutStatus(ctx context.Context, ns prefix.Namespace, blocks []Block) (alreadyPresent []bool, err error) {
	if len(blocks) == 0 {
		return nil, nil
	}
	keys := make([]prefix.Key, len(blocks))
	for i, b := range blocks {
		keys[i] = b.Key
	}
	owners := c.owners(keys)
	byNode := map[string][]int{}
	for i, os := range owners {
		for _, n := range os {
			byNode[n] = append(byNode[n], i)
		}
	}
	if len(byNode) == 0 {
		return nil, ErrNoNodes
	}
	stored := make([]atomic.Bool, len(blocks))
	present := make([]bool, len(blocks))
	blockErr := make([]error, len(blocks))
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for node, idx := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var results []*kvcachev1.PutResult
			err := c.attempt(ctx, node, func(ctx context.Context, s kvcachev1.KVCacheServiceClient) (err error) {
				results, err = c.putStream(ctx, s, ns, blocks, idx)
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			for j, i := range idx {
				switch {
				case err != nil:
					blockErr[i] = cmpErr(blockErr[i], err)
				case j >= len(results):
					blockErr[i] = cmpErr(blockErr[i], fmt.Errorf("node %s: %w: %d results for %d blocks", node, ErrUnavailable, len(results), len(idx)))
				case results[j].GetOutcome() == kvcachev1.PutResult_OUTCOME_REJECTED:
					blockErr[i] = cmpErr(blockErr[i], &RejectedError{Node: node, Code: codes.Code(results[j].GetCode()), Reason: results[j].GetReason()})
				default:
					stored[i].Store(true)
					if results[j].GetOutcome() == kvcachev1.PutResult_OUTCOME_ALREADY_PRESENT {
						present[i] = true
					}
				}
			}
		}()
	}
	wg.Wait()
	var errs []error
	for i := range blocks {
		if !stored[i].Load() {
			errs = append(errs, fmt.Errorf("block %s: %w", blocks[i].Key, blockErr[i]))
		}
	}
	return present, errors.Join(errs...)
}

// putStream sends blocks[idx] over one Put stream, chunked.
func (c *Client) putStream(ctx context.Context, s kvcachev1.KVCacheServiceClient, ns prefix.Namespace, blocks []Block, idx []int) ([]*kvcachev1.PutResult, error) {
	stream, err := s.Put(ctx)
	if err != nil {
		return nil, err
	}
	msg := new(kvcachev1.PutRequest)
	for j, i := range idx {
		b := blocks[i]
		for off := 0; off < len(b.Data) || off == 0; off += c.cfg.ChunkBytes {
			end := min(off+c.cfg.ChunkBytes, len(b.Data))
			*msg = kvcachev1.PutRequest{Offset: uint32(off), Data: b.Data[off:end]}
			if off == 0 {
				msg.Key, msg.BlockSize = b.Key[:], uint32(len(b.Data))
				if j == 0 {
					msg.Namespace = ns[:]
				}
			}
			if err := stream.Send(msg); err != nil {
				// The real cause arrives with CloseAndRecv.
				_, rerr := stream.CloseAndRecv()
				return nil, cmpErr(rerr, err)
			}
			if end == len(b.Data) {
				break
			}
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return resp.GetResults(), nil
}

// AppendAsync queues blocks to be Put in the background and returns at
// once: it never blocks the caller. Blocks that do not fit in the queue are
// dropped and counted (a dropped append costs a future hit, nothing else).
// The client owns the blocks' Data from here on.
func (c *Client) AppendAsync(ns prefix.Namespace, blocks []Block) {
	a := &c.async
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.dropped.Add(int64(len(blocks)))
		return
	}
	for _, b := range blocks {
		select {
		case c.async.q <- asyncItem{ns: ns, b: b}:
			c.async.queued.Add(1)
		default:
			c.async.dropped.Add(1)
		}
	}
}

// AsyncStats reports background append counters.
type AsyncStats struct {
	Queued, Stored, Failed, Dropped int64
}

// AsyncStats returns the background append counters.
func (c *Client) AsyncStats() AsyncStats {
	a := &c.async
	return AsyncStats{Queued: a.queued.Load(), Stored: a.stored.Load(), Failed: a.failed.Load(), Dropped: a.dropped.Load()}
}

// Flush waits until every block queued so far has been attempted, or ctx ends.
func (c *Client) Flush(ctx context.Context) error {
	for {
		a := &c.async
		if a.stored.Load()+a.failed.Load() >= a.queued.Load() {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

type asyncItem struct {
	ns prefix.Namespace
	b  Block
}

type asyncAppender struct {
	q                               chan asyncItem
	queued, stored, failed, dropped atomic.Int64
	wg                              sync.WaitGroup
	cancel                          context.CancelFunc
	mu                              sync.RWMutex // guards closing q against AppendAsync
	closed                          bool
}

const asyncWorkers = 2

func (a *asyncAppender) start(c *Client) {
	a.q = make(chan asyncItem, c.cfg.AsyncQueue)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	for range asyncWorkers {
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			for it := range a.q {
				// Batch what is already queued for the same namespace so
				// blocks share a stream and the node's group commit.
				batch := []Block{it.b}
			more:
				for len(batch) < 32 {
					select {
					case nx, ok := <-a.q:
						if !ok {
							break more
						}
						if nx.ns != it.ns {
							c.putAsync(ctx, nx.ns, []Block{nx.b})
							continue
						}
						batch = append(batch, nx.b)
					default:
						break more
					}
				}
				c.putAsync(ctx, it.ns, batch)
			}
		}()
	}
}

func (c *Client) putAsync(ctx context.Context, ns prefix.Namespace, batch []Block) {
	if err := c.Put(ctx, ns, batch); err != nil {
		c.log.Debug("background append failed", "blocks", len(batch), "err", err)
		// Put reports per block; count conservatively as all failed.
		c.async.failed.Add(int64(len(batch)))
		return
	}
	c.async.stored.Add(int64(len(batch)))
}

// stop lets queued appends finish for up to grace, then abandons them.
func (a *asyncAppender) stop(grace time.Duration) {
	a.mu.Lock()
	if a.q == nil || a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	close(a.q)
	a.mu.Unlock()
	done := make(chan struct{})
	go func() { a.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		a.cancel()
		<-done
	}
	a.cancel()
}
