package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"
)

// connsPerNode is how many gRPC connections the client keeps to each node.
// Calls are spread over them round-robin. An HTTP/2 connection has one
// writer goroutine on the node and one reader goroutine here, so one
// connection serialises every stream's bytes through two goroutines; with
// two, a fetch of 1 MiB blocks at concurrency 4 moved about 20% more (and
// spent a little less CPU per byte) on a 2-core machine. More did not help.
const connsPerNode = 2

// peer is everything the client holds for one cache node: its gRPC
// connections and its data plane (address and idle connections). It is
// made on first use and closed in one path, close, when the node leaves
// the cluster or the client closes.
type peer struct {
	addr  string
	conns []*grpc.ClientConn // conns[0] also carries health checks
	next  atomic.Uint32
	stub  kvcachev1.KVCacheServiceClient // over every conn, round-robin
	data  dataNode
}

// Invoke and NewStream make peer a grpc.ClientConnInterface that spreads
// calls over its connections.
func (n *peer) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	return n.pick().Invoke(ctx, method, args, reply, opts...)
}

func (n *peer) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return n.pick().NewStream(ctx, desc, method, opts...)
}

func (n *peer) pick() *grpc.ClientConn {
	return n.conns[int(n.next.Add(1))%len(n.conns)]
}

// close closes the node's connections, gRPC and data plane.
func (n *peer) close() error {
	n.data.close()
	var errs []error
	for _, cc := range n.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// peers is the client's node records, by address.
type peers struct {
	opts    []grpc.DialOption
	dataCfg dataConfig

	mu     sync.Mutex
	m      map[string]*peer
	closed bool
}

func newPeers(opts []grpc.DialOption, dc dataConfig) *peers {
	return &peers{opts: opts, dataCfg: dc, m: map[string]*peer{}}
}

// get returns the record of addr, dialling it on first use. If only some
// of its connections can be made it makes do with those.
func (s *peers) get(addr string) (*peer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if n := s.m[addr]; n != nil {
		return n, nil
	}
	n := &peer{addr: addr}
	for range connsPerNode {
		cc, err := dialGRPC(addr, s.opts)
		if err != nil {
			if len(n.conns) == 0 {
				return nil, err
			}
			break
		}
		n.conns = append(n.conns, cc)
	}
	n.stub = kvcachev1.NewKVCacheServiceClient(n)
	n.data.init(addr, n.stub, s.dataCfg)
	s.m[addr] = n
	return n, nil
}

// drop closes the record of a node that left the cluster.
func (s *peers) drop(addr string) {
	s.mu.Lock()
	n := s.m[addr]
	delete(s.m, addr)
	s.mu.Unlock()
	if n != nil {
		_ = n.close()
	}
}

// each calls fn for every record.
func (s *peers) each(fn func(*peer)) {
	s.mu.Lock()
	all := make([]*peer, 0, len(s.m))
	for _, n := range s.m {
		all = append(all, n)
	}
	s.mu.Unlock()
	for _, n := range all {
		fn(n)
	}
}

// close closes every record; later gets fail with ErrClosed.
func (s *peers) close() error {
	s.mu.Lock()
	all := s.m
	s.m, s.closed = nil, true
	s.mu.Unlock()
	var errs []error
	for _, n := range all {
		errs = append(errs, n.close())
	}
	return errors.Join(errs...)
}
