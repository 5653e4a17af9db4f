package client

// The client side of the bulk data plane (internal/dataplane,
// docs/dataplane.md): a node that advertises a data address in Stats
// serves fetches and lookups over plain TCP instead of gRPC. The address
// is learned once per node (one Stats call, the first time the node is
// read from) and refreshed in the background after a failure; a node
// without one, or whose data plane fails, is read over gRPC.

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
	"time"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
)

const (
	// dataIdlePerNode is how many idle data connections are kept per node.
	// A request holds a connection for its whole response, so concurrent
	// fetches of one node each get their own; extra ones are closed.
	dataIdlePerNode = 4
	// dataRetryAfter is how long after a data-plane failure a node is read
	// over gRPC before its address is asked again (in the background).
	dataRetryAfter = time.Second
	// dataRecheck is how often a node that advertised no data plane is
	// asked again (in the background), in case it restarted with one.
	dataRecheck = 30 * time.Second
)

// dataConfig is what a node's data plane needs from the client's Config
// (dialData takes it too).
type dataConfig struct {
	learnTimeout time.Duration // bounds a background Stats call
	tls          *tls.Config   // Config.TLS
	token        string        // Config.Token, sent in the hello frame
}

// dataNode is what the client knows of one node's data plane, and its
// idle connections. It is part of the node's record.
type dataNode struct {
	node string                         // gRPC address; an advertised ":port" is relative to its host
	stub kvcachev1.KVCacheServiceClient // asks the address (Stats)
	cfg  dataConfig

	mu       sync.Mutex
	addr     string    // data address to dial; valid when known
	known    bool      // addr is usable
	asked    bool      // the address was asked once (later asks run in the background)
	learning bool      // an ask is in flight
	retryAt  time.Time // no ask before then
	noLookup time.Time // the node refused lookups: look up over gRPC until then
	idle     []*dataplane.Conn
	closed   bool
}

func (n *dataNode) init(node string, stub kvcachev1.KVCacheServiceClient, cfg dataConfig) {
	n.node, n.stub, n.cfg = node, stub, cfg
}

// address returns the data address to use, or "" for gRPC. Only the very
// first call for a node waits for the answer.
func (n *dataNode) address(ctx context.Context) string {
	n.mu.Lock()
	if n.known {
		a := n.addr
		n.mu.Unlock()
		return a
	}
	if n.closed || n.learning || time.Now().Before(n.retryAt) {
		n.mu.Unlock()
		return ""
	}
	n.learning = true
	first := !n.asked
	n.asked = true
	n.mu.Unlock()
	if !first {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.learnTimeout)
			defer cancel()
			n.learn(ctx)
		}()
		return ""
	}
	return n.learn(ctx)
}

func (n *dataNode) learn(ctx context.Context) string {
	resp, err := n.stub.Stats(ctx, &kvcachev1.StatsRequest{})
	n.mu.Lock()
	defer n.mu.Unlock()
	n.learning = false
	switch {
	case err != nil:
		n.retryAt = time.Now().Add(dataRetryAfter)
		return ""
	case resp.GetDataAddr() == "":
		n.retryAt = time.Now().Add(dataRecheck)
		return ""
	}
	a := joinDataAddr(n.node, resp.GetDataAddr())
	if a == "" {
		n.retryAt = time.Now().Add(dataRecheck)
		return ""
	}
	if a != n.addr {
		n.dropIdle()
	}
	n.addr, n.known = a, true
	return a
}

// joinDataAddr resolves an advertised data address against the gRPC
// address the client dialled: ":7071" (or "0.0.0.0:7071", "[::]:7071")
// means that host; a full host:port is used as is.
func joinDataAddr(node, adv string) string {
	host, _, err := net.SplitHostPort(node)
	if err != nil {
		return ""
	}
	ah, ap, err := net.SplitHostPort(adv)
	if err != nil || ap == "" {
		return ""
	}
	if ip := net.ParseIP(ah); ah == "" || ip != nil && ip.IsUnspecified() {
		ah = host
	}
	return net.JoinHostPort(ah, ap)
}

// fail forgets the address after a data-plane failure: reads go over gRPC
// until it is asked again.
func (n *dataNode) fail() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.known = false
	n.retryAt = time.Now().Add(dataRetryAfter)
	n.dropIdle()
}

// reset forgets everything learned (UseDataPlane(false)): the address is
// asked again, in the foreground, on the next read.
func (n *dataNode) reset() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.known, n.asked = false, false
	n.retryAt, n.noLookup = time.Time{}, time.Time{}
	n.dropIdle()
}

func (n *dataNode) dropIdle() {
	for _, dc := range n.idle {
		_ = dc.Close()
	}
	n.idle = nil
}

// close is part of node.close: no connection is kept or made afterwards.
func (n *dataNode) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed, n.known = true, false
	n.dropIdle()
}

// get returns an idle connection to addr or dials one.
func (n *dataNode) get(ctx context.Context, addr string) (*dataplane.Conn, error) {
	if dc := n.idleConn(); dc != nil {
		return dc, nil
	}
	return dialData(ctx, addr, n.cfg)
}

// idleConn takes an idle connection, or returns nil.
func (n *dataNode) idleConn() *dataplane.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	k := len(n.idle)
	if k == 0 {
		return nil
	}
	dc := n.idle[k-1]
	n.idle = n.idle[:k-1]
	return dc
}

// put keeps a healthy connection for the next request.
func (n *dataNode) put(dc *dataplane.Conn, addr string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if dc.Broken() || n.closed || !n.known || n.addr != addr || len(n.idle) >= dataIdlePerNode {
		_ = dc.Close()
		return
	}
	n.idle = append(n.idle, dc)
}

// lookupOK reports whether the node's data plane may be asked lookups.
func (n *dataNode) lookupOK() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.noLookup.IsZero() || time.Now().After(n.noLookup)
}

// refuseLookup records that the node's data plane lacks lookups; it is
// asked again after dataRecheck, in case it was upgraded.
func (n *dataNode) refuseLookup() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.noLookup = time.Now().Add(dataRecheck)
}

// fetch reads the blocks of bs over one data connection to addr. Blocks
// are read straight into their buffers and checksummed as they arrive.
func (n *dataNode) fetch(ctx context.Context, addr string, ns prefix.Namespace, bs *blockSet) error {
	dc, err := n.get(ctx, addr)
	if err != nil {
		return err
	}
	defer n.put(dc, addr)
	return dc.Get(ctx, 0, ns, bs.requested(), dataplane.Sink{
		Block: bs.begin,
		Chunk: func(_, _ int, p []byte) { bs.write(p) },
		Done: func(j int, found bool) {
			if found {
				bs.end(j)
			} else {
				bs.prog.note()
			}
		},
	})
}

// lookup asks, over one data connection to addr, which of keys[idx] the
// node holds, appended to dst[:0]; it gives up at dl (ctx holds only the
// caller's deadline, see caller.attemptUntil). An idle connection asks
// with no context derived; a dial gets one.
func (n *dataNode) lookup(ctx context.Context, dl time.Time, addr string, ns prefix.Namespace, keys []prefix.Key, idx []int, dst []bool) ([]bool, error) {
	dc := n.idleConn()
	if dc == nil {
		dctx, cancel := context.WithDeadline(ctx, dl)
		var err error
		dc, err = dialData(dctx, addr, n.cfg)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	defer n.put(dc, addr)
	return dc.LookupUntil(ctx, dl, ns, keys, idx, dst)
}

// knownAddr is the data address when it is known (address without
// learning it), else "".
func (n *dataNode) knownAddr() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.known {
		return n.addr
	}
	return ""
}
