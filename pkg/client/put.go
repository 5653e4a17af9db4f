package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

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
			err := c.calls.attempt(ctx, node, func(ctx context.Context, n *peer) (err error) {
				results, err = putStream(ctx, n.stub, ns, blocks, idx, c.cfg.ChunkBytes)
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

// putStream sends blocks[idx] over one Put stream, in chunks of at most
// chunk bytes.
func putStream(ctx context.Context, s kvcachev1.KVCacheServiceClient, ns prefix.Namespace, blocks []Block, idx []int, chunk int) ([]*kvcachev1.PutResult, error) {
	stream, err := s.Put(ctx)
	if err != nil {
		return nil, err
	}
	msg := new(kvcachev1.PutRequest)
	for j, i := range idx {
		b := blocks[i]
		for off := 0; off < len(b.Data) || off == 0; off += chunk {
			end := min(off+chunk, len(b.Data))
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
