package client

import (
	"context"
	"errors"
	"sync"
	"time"

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
	op := lookupOps.Get().(*lookupOp)
	n, err := op.run(ctx, c, ns, keys)
	// Not deferred: after a panic calls of the op may still run, so it
	// must not go back to the pool.
	op.release()
	return n, err
}

func (op *lookupOp) run(ctx context.Context, c *Client, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	op.c, op.ns, op.keys = c, ns, keys
	op.present = resize(op.present, len(keys))
	op.from = resize(op.from, len(keys))
	c.readOwners(keys, &op.pl)
	fanout(ctx, c.cfg.HedgeAfter, c.members.suspect, &op.pl, fanJob[lookupAns](op), &op.fan)
	if op.firstErr != nil {
		return 0, op.firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	n := prefixLen(op.present)
	c.repair.flush(&op.rep, c.picker, ns, keys, n, op.from)
	return n, nil
}

// lookupOp is one Lookup: its fanJob and all its working memory, pooled
// (a 512-key lookup would otherwise allocate tens of kilobytes). Nothing
// of it is returned to Lookup's caller; it is released once fanout has
// returned, when no call of it runs any more.
type lookupOp struct {
	c        *Client
	ns       prefix.Namespace
	keys     []prefix.Key
	present  []bool   // by key
	from     []string // by key: the node that had it
	rep      repairs
	firstErr error
	pl       placement
	fan      fanState[lookupAns]
}

// maxPooledKeys bounds the lookups whose memory is kept for reuse.
const maxPooledKeys = 1 << 14

var lookupOps = sync.Pool{New: func() any { return new(lookupOp) }}

func (op *lookupOp) release() {
	n := len(op.keys)
	op.c, op.keys, op.firstErr = nil, nil, nil
	clear(op.from)
	op.rep.reset()
	op.pl.reset()
	if n <= maxPooledKeys {
		lookupOps.Put(op)
	}
}

// lookupAns is one node's answer: p[j] for key idx[j]. bp, when set, is
// p's pooled storage, given back once the answer is merged.
type lookupAns struct {
	p  []bool
	bp *[]bool
}

var presenceBufs = sync.Pool{New: func() any { return new([]bool) }}

func (op *lookupOp) want(dst []int) []int { return unresolved(dst, op.present, op.firstErr) }

func (op *lookupOp) call(ctx context.Context, node string, idx []int, _ bool, _ *progress) (a lookupAns, err error) {
	// A lookup is one small answer: silence is all the hedge needs to
	// know.
	err = op.c.calls.attemptUntil(ctx, node, func(ctx context.Context, dl time.Time, n *peer) (err error) {
		a, err = op.c.lookupNode(ctx, dl, n, op.ns, op.keys, idx)
		return err
	})
	return a, err
}

func (op *lookupOp) merge(node string, idx []int, a lookupAns, err error) {
	if a.bp != nil {
		defer presenceBufs.Put(a.bp)
	}
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			op.firstErr = cmpErr(op.firstErr, err)
		}
		return
	}
	for j, i := range idx {
		if j < len(a.p) && a.p[j] {
			op.present[i], op.from[i] = true, node
		} else {
			op.rep.miss(i, node)
		}
	}
}

// unresolved appends to dst[:0] the keys worth asking another owner
// about: the misses from the first one on (a miss beyond the prefix
// changes nothing), or none once the request has proved invalid.
func unresolved(dst []int, found []bool, invalid error) []int {
	dst = dst[:0]
	if invalid != nil {
		return dst
	}
	for i := prefixLen(found); i < len(found); i++ {
		if !found[i] {
			dst = append(dst, i)
		}
	}
	return dst
}

func prefixLen(present []bool) int {
	n := 0
	for n < len(present) && present[n] {
		n++
	}
	return n
}

// lookupNode answers one Lookup call on one node: the presence of
// keys[idx[j]] for each j, by dl (ctx holds only the caller's deadline:
// see caller.attemptUntil). Over the node's data plane when it has one
// that knows lookups, else (or when the data plane fails) over gRPC, as
// fetchNode does. The common case, a known data address and an idle
// connection, derives no context.
func (c *Client) lookupNode(ctx context.Context, dl time.Time, n *peer, ns prefix.Namespace, keys []prefix.Key, idx []int) (lookupAns, error) {
	derived := false
	addr := ""
	if !c.dataOff.Load() {
		addr = n.data.knownAddr()
	}
	if addr == "" {
		// Learning the address (the first time in the foreground) and
		// gRPC take the deadline in a context.
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
		derived = true
		addr = c.dataAddr(ctx, n)
	}
	if addr != "" && len(idx) <= dataplane.MaxKeysLimit && n.data.lookupOK() {
		a, err := c.lookupData(ctx, dl, n, addr, ns, keys, idx)
		if err == nil || !c.lookupFallBack(ctx, dl, n, addr, err) {
			return a, err
		}
	}
	if !derived {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	p, err := lookupGRPC(ctx, n.stub, ns, keys, idx)
	return lookupAns{p: p}, err
}

// lookupData asks over the data plane at addr, into a pooled buffer.
func (c *Client) lookupData(ctx context.Context, dl time.Time, n *peer, addr string, ns prefix.Namespace, keys []prefix.Key, idx []int) (lookupAns, error) {
	bp := presenceBufs.Get().(*[]bool)
	p, err := n.data.lookup(ctx, dl, addr, ns, keys, idx, *bp)
	if err != nil {
		presenceBufs.Put(bp)
		return lookupAns{}, err
	}
	*bp = p
	return lookupAns{p, bp}, nil
}

// lookupFallBack reports whether a lookup the data plane failed with err
// should be asked over gRPC, and notes the failure on the node.
func (c *Client) lookupFallBack(ctx context.Context, dl time.Time, n *peer, addr string, err error) bool {
	switch {
	case errors.Is(err, dataplane.ErrNoLookup):
		// A node older than the lookup extension: its data plane still
		// serves fetches; lookups go over gRPC for a while.
		n.data.refuseLookup()
	case ctx.Err() != nil || !time.Now().Before(dl):
		// Out of time on this node: it counts as the node failing.
		return false
	default:
		c.log.Debug("data-plane lookup failed, asking over gRPC", "node", n.addr, "addr", addr, "err", err)
		n.data.fail()
	}
	return true
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
