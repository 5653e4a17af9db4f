package cluster_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// hostClient is the Go client on the test host, with the default health
// settings the workers use too.
func hostClient(t *testing.T, c *cluster) *client.Client {
	t.Helper()
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.addr())
	}
	cl, err := client.New(client.Config{Nodes: addrs, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

func stateOf(cl *client.Client, addr string) client.State {
	for _, m := range cl.Members() {
		if m.Addr == addr {
			return m.State
		}
	}
	return -1
}

// A client and 2 workers against 3 nodes under steady load; one node is
// SIGKILLed. No request fails, the Go client misses no block from the kill
// on (R=2, hedged reads), and every prefix cached before the kill is a full
// hit on the workers.
func TestKillNodeUnderLoad(t *testing.T) {
	c := newCluster(t, 3, 2)
	ps := prompts(6)
	c.warm(ps)
	cl := hostClient(t, c)
	ns := prefix.Namespace{0xc1}
	blocks := seed(t, cl, ns, 24)

	ld := startLoad(c, ps)
	cld := startClientLoad(cl, ns, blocks)
	waitFor(t, 30*time.Second, "load to run", func() bool { return ld.ok.Load() >= 4 })

	victim := c.nodes[1]
	before := cld.short.Load()
	mustDocker(t, "kill", victim.name)
	killed := time.Now()
	waitFor(t, 15*time.Second, "ejection of the killed node", func() bool { return stateOf(cl, victim.addr()) == client.Ejected })
	t.Logf("death to ejection: %v", time.Since(killed).Round(time.Millisecond))

	c.waitAllHit(ps, 30*time.Second, "every prompt cached before the kill to be a full hit")
	waitFor(t, 10*time.Second, "a few client rounds after ejection", func() bool { return cld.calls.Load() > 5 })
	ld.stop(t)
	cld.stop(t)
	if s := cld.short.Load() - before; s > 0 {
		// Hedged reads ask the replica once the dead node has been silent
		// for 50ms, so not even the rounds before ejection may miss.
		t.Errorf("%d Go client rounds after the kill missed blocks (R=2 should keep every block)", s)
	}
}

// One node is cut off the network (its link is removed, packets to it
// vanish): requests still complete within their deadlines, by recompute
// where needed, and the cached prefixes come back once the node is
// ejected; after reconnection the node is re-admitted.
func TestPartitionedNodeUnderLoad(t *testing.T) {
	c := newCluster(t, 3, 2)
	ps := prompts(6)
	cold := c.warm(ps)
	cl := hostClient(t, c)

	ld := startLoad(c, ps)
	waitFor(t, 30*time.Second, "load to run", func() bool { return ld.ok.Load() >= 4 })
	// The slowest request so far (all hits, same load): with cold, the
	// baseline of this machine at this moment.
	base := time.Duration(ld.maxLat.Swap(0))
	victim := c.nodes[2]
	mustDocker(t, "network", "disconnect", "-f", c.name, victim.name)
	waitFor(t, 15*time.Second, "ejection of the partitioned node", func() bool { return stateOf(cl, victim.addr()) == client.Ejected })
	c.waitAllHit(ps, 30*time.Second, "full hits with the node partitioned")

	mustDocker(t, "network", "connect", "--ip", victim.ip, "--alias", victim.alias, c.name, victim.name)
	c.waitNode(victim)
	waitFor(t, 15*time.Second, "re-admission after the partition heals", func() bool { return stateOf(cl, victim.addr()) != client.Ejected })
	ld.stop(t)
	// A request during the partition may wait out the worker's cache
	// deadlines (lookup 200ms, fetch 200ms + 2ms/block; hedging cuts them
	// to 50ms once noticed) and then recompute (at most a cold request),
	// on top of what a request costs under this load. 3x covers the load
	// changing while the test runs; a request stuck on the vanished node
	// would take its whole 10s deadline and fail.
	limit := 3 * (cold + base + 500*time.Millisecond)
	if max := time.Duration(ld.maxLat.Load()); max > limit {
		t.Errorf("slowest request took %v during the partition; limit %v = 3 x (slowest cold request %v + slowest hit before the partition %v + 500ms of cache deadlines)",
			max, limit, cold, base)
	} else {
		t.Logf("slowest request during the partition %v (limit %v; cold %v, hit baseline %v)", max, limit, cold, base)
	}
}

// A node killed with SIGKILL and started again serves every block it had
// acknowledged: Put is durable, and the node comes back on its volume.
func TestRestartedNodeServesPersistedBlocks(t *testing.T) {
	c := newCluster(t, 1, 0)
	n := c.nodes[0]
	cl, err := client.New(client.Config{Nodes: []string{n.addr()}, Replicas: 1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ns := prefix.Namespace{0xc3}
	blocks := seed(t, cl, ns, 32)

	mustDocker(t, "kill", n.name)
	mustDocker(t, "start", n.name)
	c.waitNode(n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var raw [][]byte
	waitFor(t, 15*time.Second, "the restarted node to serve its blocks", func() bool {
		raw, err = cl.FetchRaw(ctx, ns, keysOf(blocks), nil)
		return err == nil && len(raw) == len(blocks)
	})
	for i := range raw {
		if string(raw[i]) != string(blocks[i].Data) {
			t.Fatalf("block %d differs after restart", i)
		}
	}
	s, err := cl.NodeStats(ctx, n.addr())
	if err != nil || s.GetBlocks() != uint64(len(blocks)) {
		t.Fatalf("stats after restart: %v blocks, %v; want %d", s.GetBlocks(), err, len(blocks))
	}
}

// Every node is restarted in turn (SIGTERM, graceful) under load: no
// request fails. Each node is back in rotation before the next goes down.
func TestRollingRestartUnderLoad(t *testing.T) {
	c := newCluster(t, 3, 2)
	ps := prompts(6)
	c.warm(ps)
	cl := hostClient(t, c)
	ld := startLoad(c, ps)
	waitFor(t, 30*time.Second, "load to run", func() bool { return ld.ok.Load() >= 4 })
	for _, n := range c.nodes {
		mustDocker(t, "restart", "-t", "5", n.name)
		c.waitNode(n)
		waitFor(t, 15*time.Second, n.name+" back in rotation", func() bool {
			s := stateOf(cl, n.addr())
			return s == client.Healthy || s == client.Warming
		})
	}
	ld.stop(t)
	c.waitAllHit(ps, 30*time.Second, "full hits after the rolling restart")
}
