package client_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// waitFor polls cond every few milliseconds until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func stateOf(c *client.Client, addr string) client.State {
	for _, m := range c.Members() {
		if m.Addr == addr {
			return m.State
		}
	}
	return -1
}

// fastHealth checks often so tests see transitions in milliseconds.
var fastHealth = client.HealthConfig{Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond, EjectAfter: 2, ReadmitAfter: 2, WarmUp: 300 * time.Millisecond}

func TestEjectReadmitAndSlowStart(t *testing.T) {
	nodes, addrs := testnode.Cluster(t, 3, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: addrs, CallTimeout: time.Second, Health: fastHealth, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{20}
	blocks, _ := chain(t, ns, 16, 20)
	keys := keysOf(blocks)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}

	victim, dir := addrs[1], nodes[1].Dir
	nodes[1].Stop(t)
	waitFor(t, 5*time.Second, "ejection", func() bool { return stateOf(c, victim) == client.Ejected })
	for _, k := range keys {
		if os := c.Picker().Owners(k, nil); slices.Contains(os, victim) || len(os) != 2 {
			t.Fatalf("owners %v after %s was ejected", os, victim)
		}
	}
	// R=2: every block still has a live copy, and nothing errors.
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != len(keys) {
		t.Fatalf("Lookup with a node ejected = %d, %v", n, err)
	}
	if raw, err := c.FetchRaw(ctx, ns, keys, nil); err != nil || len(raw) != len(keys) {
		t.Fatalf("FetchRaw with a node ejected = %d, %v", len(raw), err)
	}

	// The node returns on the same address with its data.
	testnode.Start(t, cachenode.Config{Listen: victim, Data: dir, NodeID: "nodeb"})
	waitFor(t, 5*time.Second, "re-admission", func() bool { return stateOf(c, victim) == client.Warming })
	waitFor(t, 5*time.Second, "end of warm-up", func() bool { return stateOf(c, victim) == client.Healthy })
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != len(keys) {
		t.Fatalf("Lookup after re-admission = %d, %v", n, err)
	}
}

func TestFailedCallMakesNodeSuspect(t *testing.T) {
	nodes, addrs := testnode.Cluster(t, 2, cachenode.Config{})
	// Slow checks: only the failed call can have demoted the node.
	h := fastHealth
	h.Interval = time.Hour
	c, err := client.New(client.Config{Nodes: addrs, CallTimeout: time.Second, Retries: -1, Health: h, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := prefix.Namespace{21}
	blocks, _ := chain(t, ns, 8, 21)
	ctx := ctxT(t)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	nodes[0].Stop(t)
	if n, err := c.Lookup(ctx, ns, keysOf(blocks)); err != nil || n != 8 {
		t.Fatalf("Lookup = %d, %v", n, err)
	}
	if s := stateOf(c, addrs[0]); s != client.Suspect {
		t.Fatalf("stopped node is %v after a failed call, want suspect", s)
	}
	// Suspect nodes are asked last for reads but still own keys.
	for _, k := range keysOf(blocks) {
		if os := c.Picker().Owners(k, nil); len(os) != 2 {
			t.Fatalf("owners %v", os)
		}
	}
}

// fakeDNS is a resolver whose answer the test changes.
type fakeDNS struct {
	mu    sync.Mutex
	addrs []string
}

func (f *fakeDNS) set(a ...string) { f.mu.Lock(); f.addrs = a; f.mu.Unlock() }
func (f *fakeDNS) resolve(_ context.Context, target string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.addrs), nil
}

func TestDNSMembership(t *testing.T) {
	_, addrs := testnode.Cluster(t, 3, cachenode.Config{})
	dns := &fakeDNS{}
	dns.set(addrs[:2]...)
	c, err := client.New(client.Config{
		Nodes: []string{"dns:///kvcache-headless:7070"}, Resolve: dns.resolve, ResolveInterval: 10 * time.Millisecond,
		Health: fastHealth, Logger: quiet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	members := func() []string {
		var out []string
		for _, m := range c.Members() {
			out = append(out, m.Addr)
		}
		return out
	}
	if got := members(); len(got) != 2 {
		t.Fatalf("members after the first resolution: %v", got)
	}
	for _, m := range c.Members() {
		if m.State != client.Healthy || m.Source != "dns:///kvcache-headless:7070" {
			t.Errorf("initial member %+v: want healthy from the DNS entry", m)
		}
	}
	dns.set(addrs...)
	waitFor(t, 5*time.Second, "the third node to join", func() bool { return len(members()) == 3 })
	if s := stateOf(c, addrs[2]); s != client.Warming && s != client.Healthy {
		t.Errorf("joined node is %v, want warming (slow start)", s)
	}
	dns.set(addrs[1:]...)
	waitFor(t, 5*time.Second, "the first node to leave", func() bool { return !slices.Contains(members(), addrs[0]) })

	ctx := ctxT(t)
	ns := prefix.Namespace{22}
	blocks, _ := chain(t, ns, 4, 22)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Lookup(ctx, ns, keysOf(blocks)); err != nil || n != 4 {
		t.Fatalf("Lookup over DNS members = %d, %v", n, err)
	}
}

func TestReadRepairCopiesToTheOwnerThatMissed(t *testing.T) {
	_, addrs := testnode.Cluster(t, 2, cachenode.Config{})
	ctx := ctxT(t)
	ns := prefix.Namespace{23}
	blocks, _ := chain(t, ns, 6, 23)
	keys := keysOf(blocks)
	// No hedging: a slow first answer (as under -race) would also ask
	// node 1 for keys node 0 wins, and repair those too.
	c, err := client.New(client.Config{Nodes: addrs, Replicas: 2, HedgeAfter: -1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Reads ask node 1 first for the keys it wins: it answers "missing"
	// and the copy found on node 0 is written back to it.
	prefers := func(a string) (n int) {
		for _, k := range keys {
			if c.Picker().Owners(k, nil)[0] == a {
				n++
			}
		}
		return n
	}
	if prefers(addrs[1]) == 0 {
		// The ports are random: let "node 1" be the one that wins keys.
		addrs[0], addrs[1] = addrs[1], addrs[0]
	}
	want := prefers(addrs[1])
	if want == 0 {
		t.Fatal("no key prefers either node")
	}
	// Seed the blocks on node 0 only, as if node 1 had lost them.
	only0, err := client.New(client.Config{Nodes: addrs[:1], Replicas: 1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer only0.Close()
	if err := only0.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	if raw, err := c.FetchRaw(ctx, ns, keys, nil); err != nil || len(raw) != len(keys) {
		t.Fatalf("FetchRaw = %d, %v", len(raw), err)
	}
	only1, err := client.New(client.Config{Nodes: addrs[1:], Replicas: 1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer only1.Close()
	waitFor(t, 5*time.Second, "read repair onto node 1", func() bool {
		s, err := only1.NodeStats(ctx, addrs[1])
		return err == nil && s.GetBlocks() == uint64(want) && c.RepairStats().Repaired >= int64(want)
	})
	if s := c.RepairStats(); s.Failed != 0 {
		t.Errorf("repair stats %+v", s)
	}
	// A second read finds them on node 1 and repairs nothing more.
	before := c.RepairStats().Queued
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != len(keys) {
		t.Fatalf("Lookup = %d, %v", n, err)
	}
	if got := c.RepairStats().Queued; got != before {
		t.Errorf("a read after repair queued %d more repairs", got-before)
	}
}

func TestCloseStopsBackgroundWork(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: append(addrs, "dns:///x:1"), Resolve: (&fakeDNS{}).resolve, ResolveInterval: time.Millisecond, Health: fastHealth, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a health check", func() bool { return !c.Members()[0].LastCheck.IsZero() })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	// Close waited for the loop: no check runs after it returns.
	last := c.Members()[0].LastCheck
	time.Sleep(5 * fastHealth.Interval) // observing absence needs a window
	if got := c.Members()[0].LastCheck; !got.Equal(last) {
		t.Fatalf("health check ran after Close (%v then %v)", last, got)
	}
	_ = c.Close() // idempotent
}

// The system resolver path: dns:///localhost:PORT finds the loopback node.
func TestSystemDNSResolution(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	_, port, _ := strings.Cut(addrs[0], ":")
	c, err := client.New(client.Config{Nodes: []string{"dns:///localhost:" + port}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var found []string
	for _, m := range c.Members() {
		found = append(found, m.Addr)
	}
	if !slices.Contains(found, addrs[0]) {
		t.Fatalf("dns:///localhost:%s resolved to %v, want %s among them", port, found, addrs[0])
	}
}
