package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// The fetch path, top to bottom: FetchRaw asks owners in parallel
// (fanout.go) and keeps each key's first verified block; fetchNode reads
// one node's share over its data plane (dataplane.go) or a gRPC stream
// (fetch_grpc.go); both feed a blockSet (receive.go), which checksums and
// verifies each block as it completes. Fetch decodes the result.

// FetchRaw fetches the longest prefix of keys that the cluster can deliver
// intact, as encoded blocks, and returns them (len = prefix length). Every
// block is verified before it is returned: header, checksum, its position
// in the chain and its parent key. A block that is missing, unreachable or
// corrupt on one owner is asked of the next. dst, when given, lends its
// buffers so repeated fetches do not allocate.
//
// FetchRaw fails only when ctx ends or the request is invalid; anything
// else shortens the prefix.
func (c *Client) FetchRaw(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst [][]byte) ([][]byte, error) {
	if len(keys) == 0 {
		return dst[:0], nil
	}
	got, _, err := c.fetch(ctx, ns, nil, keys, dst)
	return got, err
}

// FetchRawAfter is FetchRaw for keys that continue a chain after parent:
// keys[0] is the block right after parent's, so its block must name
// parent as its own parent (where FetchRaw's first block has none). A
// caller holding the start of a prefix (the worker's in-process tier)
// fetches only the rest with it.
func (c *Client) FetchRawAfter(ctx context.Context, ns prefix.Namespace, parent prefix.Key, keys []prefix.Key, dst [][]byte) ([][]byte, error) {
	if len(keys) == 0 {
		return dst[:0], nil
	}
	got, _, err := c.fetch(ctx, ns, &parent, keys, dst)
	return got, err
}

// FetchRawFunc is FetchRaw delivering each block as soon as it can be
// used, while the blocks after it are still on their way: it calls fn
// with block 0, 1, ... in chain order, each once it and every block
// before it have arrived and passed FetchRaw's checks (header, checksum,
// position in the chain, parent key), and returns how many blocks fn
// took. The prefix ends where FetchRaw's would.
//
// fn runs on the caller's goroutine, one block at a time. It owns blk:
// the client never touches it again, so fn may keep it. dst, when given,
// lends its buffers (block i is read into dst[i] when it fits), so a
// caller that keeps no block can reuse them; blk then aliases dst[i].
// An error from fn ends the fetch: FetchRawFunc stops what is still in
// flight and returns fn's error with the count of blocks before it.
//
// Like FetchRaw it fails otherwise only when ctx ends or the request is
// invalid; then it returns the error with the count of blocks fn took
// before. Anything else shortens the prefix.
func (c *Client) FetchRawFunc(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst [][]byte, fn func(i int, blk []byte) error) (int, error) {
	return c.fetchFunc(ctx, ns, nil, keys, dst, fn)
}

// FetchRawAfterFunc is FetchRawFunc for keys that continue a chain after
// parent, as FetchRawAfter is FetchRaw's.
func (c *Client) FetchRawAfterFunc(ctx context.Context, ns prefix.Namespace, parent prefix.Key, keys []prefix.Key, dst [][]byte, fn func(i int, blk []byte) error) (int, error) {
	return c.fetchFunc(ctx, ns, &parent, keys, dst, fn)
}

// fetchFunc runs the fetch on another goroutine, which publishes each
// verified block into a stream (the first verified copy of a key wins,
// whichever call or transport brought it), and hands the stream's blocks
// to fn in order on this one.
func (c *Client) fetchFunc(ctx context.Context, ns prefix.Namespace, parent *prefix.Key, keys []prefix.Key, dst [][]byte, fn func(int, []byte) error) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := newStream(len(keys))
	go func() {
		_, _, err := c.fetchBlocks(fctx, ns, true, parent, keys, dst, s)
		s.finish(err)
	}()
	for n := 0; n < len(keys); n++ {
		blk, err := s.wait(n)
		if blk == nil {
			return n, err // the fetch is over: the prefix ends here
		}
		if err = ctx.Err(); err == nil {
			err = fn(n, blk)
		}
		if err != nil {
			cancel()
			s.wait(len(keys)) // the fetch has returned: nothing outlives us
			return n, err
		}
	}
	_, err := s.wait(len(keys)) // let the fetch end on its own: it may schedule read repairs
	return len(keys), err
}

// Fetch fetches the longest intact cached prefix of keys and decodes block
// i into kvs[i], reusing its buffers. It returns how many blocks were
// decoded. A block that fails to decode ends the prefix there.
func (c *Client) Fetch(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, kvs []*kvblock.KV) (int, error) {
	if len(kvs) < len(keys) {
		return 0, fmt.Errorf("%w: %d KV buffers for %d keys", ErrInvalid, len(kvs), len(keys))
	}
	if len(keys) == 0 {
		return 0, nil
	}
	raw, hdrs, err := c.fetch(ctx, ns, nil, keys, nil)
	if err != nil {
		return 0, err
	}
	for i, b := range raw {
		// The blockSet verified the block as it arrived.
		if err := kvblock.DecodeVerified(&hdrs[i], b, kvs[i]); err != nil {
			c.log.Warn("fetched block failed to decode", "key", keys[i].String(), "err", err)
			return i, nil
		}
	}
	return len(raw), nil
}

// fetch is FetchRaw (parent nil) or FetchRawAfter, also returning the
// verified header of each block.
func (c *Client) fetch(ctx context.Context, ns prefix.Namespace, parent *prefix.Key, keys []prefix.Key, dst [][]byte) ([][]byte, []kvblock.Header, error) {
	return c.fetchBlocks(ctx, ns, true, parent, keys, dst, nil)
}

// fetchBlocks is fetch; with chained false, blocks are only checked to be
// intact and well-formed, not to sit in a chain (GetBlock). With a
// stream, each verified block is handed to it as it completes instead of
// being returned (got is then nil).
func (c *Client) fetchBlocks(ctx context.Context, ns prefix.Namespace, chained bool, parent *prefix.Key, keys []prefix.Key, dst [][]byte, pub *stream) ([][]byte, []kvblock.Header, error) {
	got := make([][]byte, len(keys))
	hdrs := make([]kvblock.Header, len(keys))
	ok := make([]bool, len(keys))
	from := make([]string, len(keys))
	var (
		rep      repairs
		firstErr error
	)
	var pl placement
	c.readOwners(keys, &pl)
	fanout(ctx, c.cfg.HedgeAfter, c.members.suspect, &pl, funcJob[*blockSet]{
		wantF: func(dst []int) []int { return unresolved(dst, ok, firstErr) },
		callF: func(ctx context.Context, node string, idx []int, first bool, prog *progress) (*blockSet, error) {
			// Each call fills its own blockSet: a hedged key may be in two
			// calls at once. Only the first call for a key borrows dst.
			bs := newBlockSet(keys, idx, chained, c.log, prog)
			bs.parent, bs.pub, bs.node = parent, pub, node
			if first {
				for _, i := range idx {
					if i < len(dst) {
						bs.lend(i, dst[i])
					}
				}
			}
			err := c.calls.attempt(ctx, node, func(ctx context.Context, n *peer) error {
				return c.fetchNode(ctx, n, ns, bs)
			})
			return bs, err
		},
		mergeF: func(node string, idx []int, bs *blockSet, err error) {
			// Blocks received whole count even if the stream broke later.
			for _, i := range idx {
				switch {
				case bs.ok[i] && !ok[i]:
					// With a stream, the block (this one or another
					// call's copy) went to it.
					got[i], hdrs[i], ok[i], from[i] = bs.got[i], bs.hdr[i], true, node
				case !bs.ok[i] && !bs.wrong[i] && err == nil:
					// The node answered: keys it did not deliver it lacks
					// (or sit after its first miss, which a repair Put
					// then finds already stored).
					rep.miss(i, node)
				}
			}
			switch {
			case err != nil && errors.Is(err, ErrInvalid):
				firstErr = cmpErr(firstErr, err)
			case err != nil:
				c.log.Debug("fetch from node failed", "node", node, "err", err)
			}
		},
	}, nil)
	if firstErr != nil {
		return nil, nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	n := prefixLen(ok)
	c.repair.flush(&rep, c.picker, ns, keys, n, from)
	return got[:n], hdrs[:n], nil
}

// fetchNode reads the blocks of bs from one node: over its data plane when
// it has one, else (or when the data plane fails) over a gRPC Get stream.
func (c *Client) fetchNode(ctx context.Context, n *peer, ns prefix.Namespace, bs *blockSet) error {
	addr := c.dataAddr(ctx, n)
	if addr == "" {
		return getStream(ctx, n.stub, ns, bs)
	}
	err := n.data.fetch(ctx, addr, ns, bs)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		// Out of time on this node: it counts as the node failing.
		return err
	}
	c.log.Debug("data plane failed, reading over gRPC", "node", n.addr, "addr", addr, "err", err)
	n.data.fail()
	bs.reset() // the stream below may overwrite any of them
	return getStream(ctx, n.stub, ns, bs)
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
