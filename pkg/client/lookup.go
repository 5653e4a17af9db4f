package client

import (
	"context"
	"errors"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Lookup returns how many keys, from the first, are cached somewhere in the
// cluster. Each key is asked of its preferred owner, all owners in
// parallel; keys an owner misses, cannot answer, or leaves unanswered past
// the hedge delay are asked of the next replica. Unreachable nodes count as
// misses: Lookup fails only when ctx ends or the request itself is invalid.
func (c *Client) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	present := make([]bool, len(keys))
	from := make([]string, len(keys))
	var (
		rep      repairs
		firstErr error
	)
	fanout(ctx, c.cfg.HedgeAfter, c.members.suspect, c.readOwners(keys), func() []int { return unresolved(present, firstErr) },
		func(ctx context.Context, node string, idx []int, _ bool, _ *progress) (p []bool, err error) {
			// A lookup is one small answer: silence is all the hedge
			// needs to know.
			err = c.calls.attempt(ctx, node, func(ctx context.Context, n *peer) (err error) {
				p, err = c.lookupNode(ctx, n, ns, keys, idx)
				return err
			})
			return p, err
		},
		func(node string, idx []int, p []bool, err error) {
			if err != nil {
				if errors.Is(err, ErrInvalid) {
					firstErr = cmpErr(firstErr, err)
				}
				return
			}
			for j, i := range idx {
				if j < len(p) && p[j] {
					present[i], from[i] = true, node
				} else {
					rep.miss(i, node)
				}
			}
		})
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := prefixLen(present)
	c.repair.flush(&rep, c.picker, ns, keys, n, from)
	return n, nil
}

// unresolved lists the keys worth asking another owner about: the misses
// from the first one on (a miss beyond the prefix changes nothing), or
// none once the request has proved invalid.
func unresolved(found []bool, invalid error) []int {
	if invalid != nil {
		return nil
	}
	var out []int
	for i := prefixLen(found); i < len(found); i++ {
		if !found[i] {
			out = append(out, i)
		}
	}
	return out
}

func prefixLen(present []bool) int {
	n := 0
	for n < len(present) && present[n] {
		n++
	}
	return n
}

// lookupNode answers one Lookup call on one node: the presence of
// keys[idx[j]] for each j. Over the node's data plane when it has one
// that knows lookups, else (or when the data plane fails) over gRPC, as
// fetchNode does.
func (c *Client) lookupNode(ctx context.Context, n *peer, ns prefix.Namespace, keys []prefix.Key, idx []int) ([]bool, error) {
	addr := c.dataAddr(ctx, n)
	if addr == "" || len(idx) > dataplane.MaxKeysLimit || !n.data.lookupOK() {
		return lookupGRPC(ctx, n.stub, ns, keys, idx)
	}
	p, err := n.data.lookup(ctx, addr, ns, keys, idx)
	switch {
	case err == nil:
		return p, nil
	case errors.Is(err, dataplane.ErrNoLookup):
		// A node older than the lookup extension: its data plane still
		// serves fetches; lookups go over gRPC for a while.
		n.data.refuseLookup()
	case ctx.Err() != nil:
		return nil, err
	default:
		c.log.Debug("data-plane lookup failed, asking over gRPC", "node", n.addr, "addr", addr, "err", err)
		n.data.fail()
	}
	return lookupGRPC(ctx, n.stub, ns, keys, idx)
}

// lookupGRPC asks a node which of keys[idx] it holds. A node that answers
// only the prefix length (no per-key presence) holds that many from the
// first.
func lookupGRPC(ctx context.Context, s kvcachev1.KVCacheServiceClient, ns prefix.Namespace, keys []prefix.Key, idx []int) ([]bool, error) {
	resp, err := s.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:], Keys: keyBytes(keys, idx), All: true})
	if err != nil {
		return nil, err
	}
	if p := resp.GetPresent(); len(p) > 0 {
		return p, nil
	}
	p := make([]bool, len(idx))
	for j := range min(int(resp.GetPrefixLen()), len(p)) {
		p[j] = true
	}
	return p, nil
}
