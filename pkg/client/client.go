// Package client is the Go client of a kvcache cluster: workers use it to
// find the longest cached prefix of a prompt, fetch and decode its blocks,
// and append the blocks they computed.
//
// Every call has a deadline and idempotent calls are retried, so a slow or
// dead node costs cache hits, never a hung request. Placement (which nodes
// own a key) sits behind the Picker interface.
package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Config names the nodes and tunes the client. Zero values mean defaults.
type Config struct {
	// Nodes are gRPC addresses (host:port) of the cache nodes, or DNS
	// entries ("dns:///host:port", "dnssrv:///_grpc._tcp.name") that are
	// re-resolved every ResolveInterval; both may be mixed.
	Nodes []string
	// Replicas is how many nodes own each block. Default 2 (capped at the
	// number of nodes).
	Replicas int
	// Picker overrides placement. Default: rendezvous hashing over the
	// live members, with slow start for reads (see HealthConfig). A
	// custom Picker with a SetNodes([]string) method is given the live
	// members on every change.
	Picker Picker
	// Health tunes active health checks, ejection and slow start.
	Health HealthConfig
	// ResolveInterval is how often DNS entries of Nodes are re-resolved.
	// Default 10s.
	ResolveInterval time.Duration
	// Resolve resolves one DNS entry of Nodes to node addresses. Default:
	// the system resolver (A/AAAA for dns:///, SRV for dnssrv:///).
	Resolve func(ctx context.Context, target string) ([]string, error)
	// RepairQueue bounds pending read repairs; repairs that do not fit are
	// dropped. Default 256; negative disables read repair.
	RepairQueue int
	// CallTimeout bounds every attempt of every call. Default 2s.
	CallTimeout time.Duration
	// Retries is how many times an idempotent call is retried on the same
	// node after a transient failure. Default 1.
	Retries int
	// ChunkBytes is the data size of one Put message. Default 1 MiB.
	ChunkBytes int
	// AsyncQueue bounds the blocks waiting in AppendAsync. When the queue
	// is full, further blocks are dropped (and counted), never waited for.
	// Default 1024.
	AsyncQueue int
	// HedgeAfter is how long a read waits for a node's first answer before
	// it also asks the next replica, so a dead or stalled node costs a
	// hedge delay rather than the caller's deadline. Default 50ms; negative
	// disables hedging.
	HedgeAfter time.Duration
	// DialOptions are added to the defaults (insecure transport, large
	// messages). Tests pass a bufconn dialer here.
	DialOptions []grpc.DialOption
	// Logger receives background failures. Default slog.Default().
	Logger *slog.Logger
}

// maxMsg covers the server's largest chunk plus framing.
const maxMsg = 8 << 20

// Client talks to a set of cache nodes. It is safe for concurrent use.
type Client struct {
	cfg     Config
	picker  Picker
	log     *slog.Logger
	members membership
	repair  repairer
	once    sync.Once

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	extra  map[string]*nodeConns // all connections per node for calls (connpool.go)
	closed bool

	async asyncAppender
	data  dataPlane // bulk-transfer connections (dataplane.go)
}

// New returns a client for cfg.Nodes. Connections are made lazily, so New
// succeeds while nodes are down.
func New(cfg Config) (*Client, error) {
	if len(cfg.Nodes) == 0 && cfg.Picker == nil {
		return nil, ErrNoNodes
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 2
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 2 * time.Second
	}
	if cfg.HedgeAfter == 0 {
		cfg.HedgeAfter = defaultHedgeAfter
	}
	if cfg.Retries < 0 {
		cfg.Retries = 0
	} else if cfg.Retries == 0 {
		cfg.Retries = 1
	}
	if cfg.ChunkBytes <= 0 {
		cfg.ChunkBytes = 1 << 20
	}
	if cfg.AsyncQueue <= 0 {
		cfg.AsyncQueue = 1024
	}
	if cfg.RepairQueue == 0 {
		cfg.RepairQueue = 256
	}
	if cfg.ResolveInterval <= 0 {
		cfg.ResolveInterval = 10 * time.Second
	}
	if cfg.Resolve == nil {
		cfg.Resolve = defaultResolve
	}
	cfg.Health.defaults()
	c := &Client{cfg: cfg, picker: cfg.Picker, log: cfg.Logger, conns: map[string]*grpc.ClientConn{}}
	c.data.nodes = map[string]*dataNode{}
	if c.log == nil {
		c.log = slog.Default()
	}
	static, targets := splitNodes(cfg.Nodes)
	c.members = membership{
		hc: cfg.Health, replicas: max(cfg.Replicas, 1), static: static, targets: targets,
		resolve: cfg.Resolve, resolveEvery: cfg.ResolveInterval, check: c.checkNode,
		onRemove: c.dropConn, log: c.log,
	}
	if c.picker == nil {
		c.picker = livePicker{&c.members}
	} else if s, ok := c.picker.(interface{ SetNodes([]string) }); ok {
		c.members.onChange = s.SetNodes
	}
	c.members.start(cfg.CallTimeout)
	c.async.start(c)
	c.repair.start(c)
	return c, nil
}

// Close stops background appends (waiting up to the call timeout for queued
// ones) and closes all connections.
func (c *Client) Close() error {
	c.async.stop(c.cfg.CallTimeout)
	c.once.Do(func() {
		c.repair.stop()
		c.members.stop()
		c.data.closeAll()
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for _, cc := range c.conns {
		errs = append(errs, cc.Close())
	}
	c.conns = nil
	errs = append(errs, c.closeExtra("")...)
	return errors.Join(errs...)
}

func (c *Client) stub(node string) (kvcachev1.KVCacheServiceClient, error) {
	cc, err := c.conn(node)
	if err != nil {
		return nil, err
	}
	return kvcachev1.NewKVCacheServiceClient(c.connSet(node, cc)), nil
}

// conn returns the node's connection, dialling it lazily.
func (c *Client) conn(node string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if cc, ok := c.conns[node]; ok {
		return cc, nil
	}
	cc, err := c.dial(node)
	if err != nil {
		return nil, err
	}
	c.conns[node] = cc
	return cc, nil
}

// dial makes a new connection to node.
func (c *Client) dial(node string) (*grpc.ClientConn, error) {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)),
		// Reconnect quickly after a node returns: the default backoff
		// grows to 2 minutes, which would keep a restarted node ejected.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
	}, append(transportDialOptions(), c.cfg.DialOptions...)...)
	cc, err := grpc.NewClient(node, opts...)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w: %v", node, ErrUnavailable, err)
	}
	return cc, nil
}

// dropConn closes the connection of a node that left the cluster.
func (c *Client) dropConn(node string) {
	c.mu.Lock()
	cc := c.conns[node]
	delete(c.conns, node)
	c.mu.Unlock()
	if cc != nil {
		_ = cc.Close()
	}
	c.closeExtra(node)
}

// attempt runs an idempotent call against one node with a per-attempt
// deadline, retrying transient failures with a short backoff.
func (c *Client) attempt(ctx context.Context, node string, call func(context.Context, kvcachev1.KVCacheServiceClient) error) error {
	stub, err := c.stub(node)
	if err != nil {
		return err
	}
	backoff := 10 * time.Millisecond
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, c.cfg.CallTimeout)
		err = wrapRPC(node, call(actx, stub))
		cancel()
		if err == nil || !retryable(err) || try >= c.cfg.Retries || ctx.Err() != nil {
			if ctx.Err() != nil && err != nil {
				// A caller's deadline that ran out on this node (not a
				// cancellation) says the node is slow or gone: read
				// elsewhere first until a health check clears it.
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && retryable(err) {
					c.members.suspect(node, err)
				}
				return fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			if err != nil && retryable(err) {
				c.members.suspect(node, err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// owners returns, for each key, its owners in preference order: the nodes
// writes go to.
func (c *Client) owners(keys []prefix.Key) [][]string {
	out := make([][]string, len(keys))
	for i, k := range keys {
		out[i] = c.picker.Owners(k, nil)
	}
	return out
}

// readOwners returns, for each key, the nodes reads ask in order; with
// the default picker that applies slow start and demotes suspect nodes.
func (c *Client) readOwners(keys []prefix.Key) [][]string {
	rp, ok := c.picker.(interface {
		ReadOwners(prefix.Key, []string) []string
	})
	if !ok {
		return c.owners(keys)
	}
	// One backing array for every key's owners (at most 2 per replica:
	// ready ones, then the rest in rank order); a longer list than that
	// just grows its own.
	per := 2 * max(c.cfg.Replicas, 1)
	buf := make([]string, len(keys)*per)
	out := make([][]string, len(keys))
	for i, k := range keys {
		out[i] = rp.ReadOwners(k, buf[i*per:i*per:(i+1)*per])
	}
	return out
}

func keyBytes(keys []prefix.Key, idx []int) [][]byte {
	out := make([][]byte, len(idx))
	for j, i := range idx {
		out[j] = keys[i][:]
	}
	return out
}

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
	fanout(ctx, c, c.readOwners(keys), func() []int { return unresolved(present, firstErr) },
		func(ctx context.Context, node string, idx []int, _ bool) (p []bool, err error) {
			err = c.attempt(ctx, node, func(ctx context.Context, s kvcachev1.KVCacheServiceClient) (err error) {
				p, err = c.lookupNode(ctx, s, node, ns, keys, idx)
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
	c.flushRepairs(&rep, ns, keys, n, from)
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

// NodeStats returns one node's counters.
func (c *Client) NodeStats(ctx context.Context, node string) (*kvcachev1.StatsResponse, error) {
	var resp *kvcachev1.StatsResponse
	err := c.attempt(ctx, node, func(ctx context.Context, s kvcachev1.KVCacheServiceClient) (err error) {
		resp, err = s.Stats(ctx, &kvcachev1.StatsRequest{})
		return err
	})
	return resp, err
}

// Delete removes keys from every owner and returns how many copies were
// removed. Unreachable owners are reported in the error.
func (c *Client) Delete(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error) {
	if len(keys) == 0 {
		return 0, fmt.Errorf("%w: no keys", ErrInvalid)
	}
	owners := c.owners(keys)
	byNode := map[string][]int{}
	for i, os := range owners {
		for _, n := range os {
			byNode[n] = append(byNode[n], i)
		}
	}
	var (
		mu    sync.Mutex
		total int
		errs  []error
		wg    sync.WaitGroup
	)
	for node, idx := range byNode {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp *kvcachev1.DeleteResponse
			err := c.attempt(ctx, node, func(ctx context.Context, s kvcachev1.KVCacheServiceClient) (err error) {
				resp, err = s.Delete(ctx, &kvcachev1.DeleteRequest{Namespace: ns[:], Keys: keyBytes(keys, idx)})
				return err
			})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			total += int(resp.GetDeleted())
		}()
	}
	wg.Wait()
	return total, errors.Join(errs...)
}
