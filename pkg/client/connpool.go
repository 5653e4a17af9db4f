package client

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
)

// connsPerNode is how many connections the client keeps to each node.
// Calls are spread over them round-robin. An HTTP/2 connection has one
// writer goroutine on the node and one reader goroutine here, so one
// connection serialises every stream's bytes through two goroutines; with
// two, a fetch of 1 MiB blocks at concurrency 4 moved about 20% more (and
// spent a little less CPU per byte) on a 2-core machine. More did not help.
const connsPerNode = 2

// nodeConns is a grpc.ClientConnInterface over a node's connections:
// conns[0] is the primary one (Client.conn, also used by health checks),
// the others are only ever used here.
type nodeConns struct {
	conns []*grpc.ClientConn
	next  atomic.Uint32
}

func (r *nodeConns) pick() *grpc.ClientConn {
	return r.conns[int(r.next.Add(1))%len(r.conns)]
}

func (r *nodeConns) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return r.pick().Invoke(ctx, method, args, reply, opts...)
}

func (r *nodeConns) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return r.pick().NewStream(ctx, desc, method, opts...)
}

// connSet returns the connections to node for calls: primary (the one
// conn returned) and connsPerNode-1 more, dialled on first use. If
// dialling fails it makes do with primary alone.
func (c *Client) connSet(node string, primary *grpc.ClientConn) grpc.ClientConnInterface {
	if connsPerNode <= 1 {
		return primary
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return primary
	}
	if nc, ok := c.extra[node]; ok && nc.conns[0] == primary {
		return nc
	}
	nc := &nodeConns{conns: []*grpc.ClientConn{primary}}
	if old := c.extra[node]; old != nil { // primary was redialled: drop the stale extras
		for _, cc := range old.conns[1:] {
			_ = cc.Close()
		}
	}
	for range connsPerNode - 1 {
		cc, err := c.dial(node)
		if err != nil {
			break
		}
		nc.conns = append(nc.conns, cc)
	}
	if c.extra == nil {
		c.extra = map[string]*nodeConns{}
	}
	c.extra[node] = nc
	return nc
}

// closeExtra closes the extra connections (not the primary ones) of node,
// or of every node when node is "", which only Close does, holding c.mu;
// otherwise the caller must not hold it.
func (c *Client) closeExtra(node string) []error {
	var errs []error
	closeAll := func(nc *nodeConns) {
		for _, cc := range nc.conns[1:] {
			errs = append(errs, cc.Close())
		}
	}
	if node == "" {
		for _, nc := range c.extra {
			closeAll(nc)
		}
		c.extra = nil
		return errs
	}
	c.mu.Lock()
	nc := c.extra[node]
	delete(c.extra, node)
	c.mu.Unlock()
	if nc != nil {
		closeAll(nc)
	}
	return errs
}
