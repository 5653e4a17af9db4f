package client

// The client side of the bulk data plane (internal/dataplane,
// docs/dataplane.md): a node that advertises a data address in Stats
// serves FetchRaw's blocks over plain TCP instead of the gRPC Get stream.
// The address is learned once per node (one Stats call, the first time the
// node is read from) and refreshed in the background after a failure; a
// node without one, or whose data plane fails, is read over gRPC.
//
// A node's data connections are closed when its gRPC connection shuts
// down (Client.Close, or the node leaving).

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"

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

// dataPlane is one client's data-plane state.
type dataPlane struct {
	off   atomic.Bool
	mu    sync.Mutex
	nodes map[string]*dataNode
}

func (c *Client) dataPlane() *dataPlane { return &c.data }

// UseDataPlane turns the bulk data plane on (the default) or off for this
// client; off, every fetch uses gRPC streams. Benchmarks compare the two.
func (c *Client) UseDataPlane(on bool) {
	dp := c.dataPlane()
	dp.off.Store(!on)
	if !on {
		dp.closeAll()
	}
}

func (dp *dataPlane) closeAll() {
	dp.mu.Lock()
	nodes := dp.nodes
	dp.nodes = map[string]*dataNode{}
	dp.mu.Unlock()
	for _, n := range nodes {
		n.close()
	}
}

// node returns the state of node, tied to its current gRPC connection.
func (dp *dataPlane) node(c *Client, node string) *dataNode {
	cc, err := c.conn(node)
	if err != nil {
		return nil
	}
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if n := dp.nodes[node]; n != nil && n.cc == cc {
		return n
	}
	if old := dp.nodes[node]; old != nil {
		go old.close()
	}
	n := &dataNode{cc: cc}
	dp.nodes[node] = n
	// The node's data connections live as long as its gRPC connection.
	go func() {
		for s := cc.GetState(); s != connectivity.Shutdown; s = cc.GetState() {
			cc.WaitForStateChange(context.Background(), s)
		}
		n.close()
		dp.mu.Lock()
		if dp.nodes[node] == n {
			delete(dp.nodes, node)
		}
		dp.mu.Unlock()
	}()
	return n
}

// dataNode is what the client knows of one node's data plane, and its
// idle connections.
type dataNode struct {
	cc *grpc.ClientConn

	mu       sync.Mutex
	addr     string    // data address to dial; valid when known
	known    bool      // addr is usable
	asked    bool      // the address was asked once (later asks run in the background)
	learning bool      // an ask is in flight
	retryAt  time.Time // no ask before then
	noLookup time.Time // the node refused FlagLookup: look up over gRPC until then
	idle     []*dataplane.Conn
	closed   bool
}

// address returns the data address to use, or "" for gRPC. Only the very
// first call for a node waits for the answer.
func (n *dataNode) address(ctx context.Context, c *Client, s kvcachev1.KVCacheServiceClient, node string) string {
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
			ctx, cancel := context.WithTimeout(context.Background(), c.cfg.CallTimeout)
			defer cancel()
			n.learn(ctx, s, node)
		}()
		return ""
	}
	return n.learn(ctx, s, node)
}

func (n *dataNode) learn(ctx context.Context, s kvcachev1.KVCacheServiceClient, node string) string {
	resp, err := s.Stats(ctx, &kvcachev1.StatsRequest{})
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
	a := joinDataAddr(node, resp.GetDataAddr())
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

func (n *dataNode) dropIdle() {
	for _, dc := range n.idle {
		_ = dc.Close()
	}
	n.idle = nil
}

func (n *dataNode) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.closed, n.known = true, false
	n.dropIdle()
}

// get returns an idle connection to addr or dials one.
func (n *dataNode) get(ctx context.Context, addr string) (*dataplane.Conn, error) {
	n.mu.Lock()
	if k := len(n.idle); k > 0 {
		dc := n.idle[k-1]
		n.idle = n.idle[:k-1]
		n.mu.Unlock()
		return dc, nil
	}
	n.mu.Unlock()
	return dataplane.Dial(ctx, addr, dataplane.DialOptions{})
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

// fetchNode reads the blocks idx of keys from one node into got, marking
// ok as getStream does: over the node's data plane when it has one, else
// (or when the data plane fails) over a gRPC Get stream.
func (c *Client) fetchNode(ctx context.Context, s kvcachev1.KVCacheServiceClient, node string, ns prefix.Namespace, keys []prefix.Key, idx []int, got [][]byte, ok []bool) error {
	dp := c.dataPlane()
	if dp.off.Load() {
		return c.getStream(ctx, s, ns, keys, idx, got, ok)
	}
	n := dp.node(c, node)
	if n == nil {
		return c.getStream(ctx, s, ns, keys, idx, got, ok)
	}
	addr := n.address(ctx, c, s, node)
	if addr == "" {
		return c.getStream(ctx, s, ns, keys, idx, got, ok)
	}
	dc, err := n.get(ctx, addr)
	if err == nil {
		err = c.dataGet(ctx, dc, ns, keys, idx, got, ok)
		n.put(dc, addr)
		if err == nil {
			return nil
		}
	}
	if ctx.Err() != nil {
		// Out of time on this node: it counts as the node failing.
		return err
	}
	c.log.Debug("data plane failed, reading over gRPC", "node", node, "addr", addr, "err", err)
	n.fail()
	for _, i := range idx {
		ok[i] = false // the stream below may overwrite any of them
	}
	return c.getStream(ctx, s, ns, keys, idx, got, ok)
}

// dataGet is getStream over a data connection: blocks are read straight
// into got (reusing capacity) and their CRC32C computed piece by piece as
// they arrive; ok is set only for blocks whose checksum matches.
func (c *Client) dataGet(ctx context.Context, dc *dataplane.Conn, ns prefix.Namespace, keys []prefix.Key, idx []int, got [][]byte, ok []bool) error {
	sub := make([]prefix.Key, len(idx))
	for j, i := range idx {
		sub[j] = keys[i]
	}
	var sum uint32
	return dc.Get(ctx, 0, ns, sub, dataplane.Sink{
		Block: func(j, size int) []byte {
			i := idx[j]
			if cap(got[i]) < size {
				got[i] = make([]byte, size)
			}
			got[i] = got[i][:size]
			sum = 0
			return got[i]
		},
		Chunk: func(_, off int, p []byte) {
			sum = updateBlockCRC(sum, off, p)
			noteProgress(ctx)
		},
		Done: func(j int, found bool) {
			noteProgress(ctx)
			if !found {
				return
			}
			i := idx[j]
			ok[i] = headerCRC(got[i]) == sum
			if !ok[i] {
				c.log.Warn("fetched block failed its checksum", "key", keys[i].String())
			}
		},
	})
}

// lookupNode answers one Lookup call on one node: the presence of
// keys[idx[j]] for each j. Over the node's data plane when it has one
// that knows lookups, else (or when the data plane fails) over gRPC, like
// fetchNode.
func (c *Client) lookupNode(ctx context.Context, s kvcachev1.KVCacheServiceClient, node string, ns prefix.Namespace, keys []prefix.Key, idx []int) ([]bool, error) {
	dp := c.dataPlane()
	if dp.off.Load() {
		return lookupGRPC(ctx, s, ns, keys, idx)
	}
	n := dp.node(c, node)
	if n == nil {
		return lookupGRPC(ctx, s, ns, keys, idx)
	}
	addr := n.address(ctx, c, s, node)
	if addr == "" || len(idx) > dataplane.MaxKeysLimit || !n.lookupOK() {
		return lookupGRPC(ctx, s, ns, keys, idx)
	}
	dc, err := n.get(ctx, addr)
	if err == nil {
		var p []bool
		p, err = dc.Lookup(ctx, ns, keys, idx, nil)
		n.put(dc, addr)
		if err == nil {
			noteProgress(ctx)
			return p, nil
		}
	}
	if errors.Is(err, dataplane.ErrNoLookup) {
		// A node older than the lookup extension: its data plane still
		// serves fetches; lookups go over gRPC for a while.
		n.refuseLookup()
		return lookupGRPC(ctx, s, ns, keys, idx)
	}
	if ctx.Err() != nil {
		return nil, err
	}
	c.log.Debug("data-plane lookup failed, asking over gRPC", "node", node, "addr", addr, "err", err)
	n.fail()
	return lookupGRPC(ctx, s, ns, keys, idx)
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

// lookupOK reports whether the node's data plane may be asked lookups.
func (n *dataNode) lookupOK() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.noLookup.IsZero() || time.Now().After(n.noLookup)
}

// refuseLookup records that the node's data plane lacks FlagLookup; it is
// asked again after dataRecheck, in case it was upgraded.
func (n *dataNode) refuseLookup() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.noLookup = time.Now().Add(dataRecheck)
}
