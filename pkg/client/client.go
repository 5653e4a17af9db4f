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
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

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
	// custom Picker that is a NodeSetter is given the live members on
	// every change; one that is a ReadPicker chooses the read order.
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
	// HedgeAfter is how long a read waits for a node's first answer before
	// it also asks the next replica, so a dead or stalled node costs a
	// hedge delay rather than the caller's deadline. Default 50ms; negative
	// disables hedging.
	HedgeAfter time.Duration
	// TLS, if set, secures every connection, gRPC and data plane, with
	// this config (RootCAs to verify nodes, Certificates for mTLS). A
	// ServerName of "" means the host of each node's address. Nil: plain
	// TCP (docs/security.md).
	TLS *tls.Config
	// Token, if set, is sent to every node: as "authorization: Bearer"
	// on gRPC and in the data plane's hello frame.
	Token string
	// DialOptions are added to the defaults (transport from TLS, large
	// messages; see dial.go). Tests pass a bufconn dialer here.
	DialOptions []grpc.DialOption
	// Logger receives background failures. Default slog.Default().
	Logger *slog.Logger
}

// Client talks to a set of cache nodes. It is safe for concurrent use.
type Client struct {
	cfg     Config
	picker  Picker
	log     *slog.Logger
	peers   *peers // one record per node: its gRPC and data-plane connections
	calls   caller
	members membership
	repair  repairer
	dataOff atomic.Bool // UseDataPlane(false)
	once    sync.Once
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
	c := &Client{cfg: cfg, picker: cfg.Picker, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.Default()
	}
	c.peers = newPeers(dialOptions(&c.cfg), dataConfig{learnTimeout: cfg.CallTimeout, tls: cfg.TLS, token: cfg.Token})
	static, targets := splitNodes(cfg.Nodes)
	c.members = membership{
		hc: cfg.Health, replicas: max(cfg.Replicas, 1), static: static, targets: targets,
		resolve: cfg.Resolve, resolveEvery: cfg.ResolveInterval, check: healthCheck(c.peers, cfg.Health.Service),
		onRemove: c.peers.drop, log: c.log,
	}
	c.calls = caller{peers: c.peers, timeout: cfg.CallTimeout, retries: cfg.Retries, suspect: c.members.suspect}
	if c.picker == nil {
		c.picker = livePicker{&c.members}
	} else if s, ok := c.picker.(NodeSetter); ok {
		c.members.onChange = s.SetNodes
	}
	c.members.start(cfg.CallTimeout)
	c.repair.start(cfg.RepairQueue, c.copyBlock, c.log)
	return c, nil
}

// Close stops background work (read repairs, health checks, discovery)
// and closes all connections.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.repair.stop()
		c.members.stop()
	})
	return c.peers.close()
}

// UseDataPlane turns the bulk data plane on (the default) or off for this
// client; off, every fetch and lookup uses gRPC. Benchmarks compare the
// two.
func (c *Client) UseDataPlane(on bool) {
	c.dataOff.Store(!on)
	if !on {
		c.peers.each(func(n *peer) { n.data.reset() })
	}
}

// dataAddr returns the data address to read n over, or "" for gRPC.
func (c *Client) dataAddr(ctx context.Context, n *peer) string {
	if c.dataOff.Load() {
		return ""
	}
	return n.data.address(ctx)
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

func keyBytes(keys []prefix.Key, idx []int) [][]byte {
	out := make([][]byte, len(idx))
	for j, i := range idx {
		out[j] = keys[i][:]
	}
	return out
}

// NodeStats returns one node's counters.
func (c *Client) NodeStats(ctx context.Context, node string) (*kvcachev1.StatsResponse, error) {
	var resp *kvcachev1.StatsResponse
	err := c.calls.attempt(ctx, node, func(ctx context.Context, n *peer) (err error) {
		resp, err = n.stub.Stats(ctx, &kvcachev1.StatsRequest{})
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
			err := c.calls.attempt(ctx, node, func(ctx context.Context, n *peer) (err error) {
				resp, err = n.stub.Delete(ctx, &kvcachev1.DeleteRequest{Namespace: ns[:], Keys: keyBytes(keys, idx)})
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
