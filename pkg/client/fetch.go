package client

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

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
	got := make([][]byte, len(keys))
	ok := make([]bool, len(keys))
	from := make([]string, len(keys))
	var (
		rep      repairs
		firstErr error
	)
	type received struct {
		got [][]byte
		ok  []bool
	}
	fanout(ctx, c, c.readOwners(keys), func() []int { return unresolved(ok, firstErr) },
		func(ctx context.Context, node string, idx []int, first bool) (received, error) {
			// Each call fills its own slots: a hedged key may be in two
			// calls at once. Only the first call for a key borrows dst.
			r := received{got: make([][]byte, len(keys)), ok: make([]bool, len(keys))}
			if first {
				for _, i := range idx {
					if i < len(dst) {
						r.got[i] = dst[i][:0]
					}
				}
			}
			err := c.attempt(ctx, node, func(ctx context.Context, s kvcachev1.KVCacheServiceClient) error {
				return c.fetchNode(ctx, s, node, ns, keys, idx, r.got, r.ok)
			})
			return r, err
		},
		func(node string, idx []int, r received, err error) {
			// Blocks received whole count even if the stream broke later.
			for _, i := range idx {
				if r.ok[i] {
					if !ok[i] && c.verify(r.got[i], keys, i) {
						got[i], ok[i], from[i] = r.got[i], true, node
					}
				} else if err == nil {
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
		})
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n := prefixLen(ok)
	c.flushRepairs(&rep, ns, keys, n, from)
	return got[:n], nil
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// verify checks a fetched block against where it must sit in the chain, so
// a block stored under the wrong key is never served as a hit.
func (c *Client) verify(block []byte, keys []prefix.Key, i int) bool {
	// getStream has checked the CRC as the bytes arrived.
	h, err := kvblock.ParseHeader(block)
	if err != nil {
		c.log.Warn("fetched block failed verification", "key", keys[i].String(), "err", err)
		return false
	}
	if h.HasParent && (i == 0 || h.Parent != keys[i-1]) {
		c.log.Warn("fetched block has the wrong parent", "key", keys[i].String())
		return false
	}
	return true
}

// getStream reads one Get stream into got[idx[j]]. It marks ok only for
// blocks received whole whose CRC32C matches their header; the caller
// verifies the rest of the header. Block data is copied once, from the
// transport's buffers into got (getCodec), reusing got's capacity, and the
// checksum is computed piece by piece as it is copied, while the bytes are
// still in cache (a second pass over a block costs a fifth of a fetch).
func (c *Client) getStream(ctx context.Context, s kvcachev1.KVCacheServiceClient, ns prefix.Namespace, keys []prefix.Key, idx []int, got [][]byte, ok []bool) error {
	// Not stop-at-miss: a node asked first for a key it does not own (its
	// owner was suspect) must still answer for the keys after it that it
	// does own, or those would be written off as asked.
	stream, err := s.Get(ctx, &kvcachev1.GetRequest{Namespace: ns[:], Keys: keyBytes(keys, idx)}, grpc.ForceCodecV2(getStreamCodec))
	if err != nil {
		return err
	}
	var framing error // why into refused a message; grpc reports it only as Internal
	var sum uint32    // CRC32C of the block being received, so far
	msg := &getChunk{into: func(m *getChunk, n int) ([]byte, error) {
		j := int(m.Index)
		if j >= len(idx) {
			framing = fmt.Errorf("%w: node answered index %d of %d keys", ErrUnavailable, j, len(idx))
			return nil, framing
		}
		if m.Missing {
			return nil, nil
		}
		i := idx[j]
		size, off := int(m.BlockSize), int(m.Offset)
		if off == 0 {
			if cap(got[i]) < size {
				got[i] = make([]byte, 0, size)
			}
			got[i] = got[i][:0]
		}
		if off != len(got[i]) || off+n > size {
			framing = fmt.Errorf("%w: chunk at %d of a %d-byte block after %d bytes", ErrUnavailable, off, size, len(got[i]))
			return nil, framing
		}
		if off == 0 {
			sum = 0
		}
		got[i] = got[i][:off+n]
		return got[i][off:], nil
	}, copied: func(m *getChunk, at int, p []byte) {
		sum = updateBlockCRC(sum, int(m.Offset)+at, p)
	}}
	for {
		if err := stream.RecvMsg(msg); err == io.EOF {
			return nil
		} else if err != nil {
			return cmpErr(framing, err)
		}
		noteProgress(ctx)
		if msg.Missing {
			continue
		}
		i := idx[msg.Index]
		if len(got[i]) == int(msg.BlockSize) {
			ok[i] = headerCRC(got[i]) == sum
			if !ok[i] {
				c.log.Warn("fetched block failed its checksum", "key", keys[i].String())
			}
		}
	}
}

// Fetch fetches the longest intact cached prefix of keys and decodes block
// i into kvs[i], reusing its buffers. It returns how many blocks were
// decoded. A block that fails to decode ends the prefix there.
func (c *Client) Fetch(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, kvs []*kvblock.KV) (int, error) {
	if len(kvs) < len(keys) {
		return 0, fmt.Errorf("%w: %d KV buffers for %d keys", ErrInvalid, len(kvs), len(keys))
	}
	raw, err := c.FetchRaw(ctx, ns, keys, nil)
	if err != nil {
		return 0, err
	}
	for i, b := range raw {
		if _, err := kvblock.Decode(b, kvs[i]); err != nil {
			c.log.Warn("fetched block failed to decode", "key", keys[i].String(), "err", err)
			return i, nil
		}
	}
	return len(raw), nil
}
