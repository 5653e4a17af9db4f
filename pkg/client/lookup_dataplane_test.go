package client_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

func TestLookupOverDataPlane(t *testing.T) {
	node := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: []string{node.Addr()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{31}
	blocks, _ := chain(t, ns, 8, 31)
	// Present: 0 1 2 _ 4 5 _ _ (a gap, then more present keys).
	for _, i := range []int{0, 1, 2, 4, 5} {
		if err := c.Put(ctx, ns, blocks[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	keys := keysOf(blocks)
	before := dataRequests(t, node)
	for _, tc := range []struct {
		keys []prefix.Key
		want int
	}{{keys, 3}, {keys[:2], 2}, {keys[3:], 0}, {keys[4:6], 2}, {keys[4:], 2}} {
		for round := range 2 {
			n, err := c.Lookup(ctx, ns, tc.keys)
			if err != nil || n != tc.want {
				t.Fatalf("round %d: Lookup of %d keys = %d, %v; want %d", round, len(tc.keys), n, err, tc.want)
			}
		}
	}
	// The node counts a request just after answering it.
	waitFor(t, 5*time.Second, "10 data-plane requests for 10 lookups", func() bool { return dataRequests(t, node)-before == 10 })
	// Over gRPC only, the same answers.
	c.UseDataPlane(false)
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != 3 {
		t.Fatalf("gRPC Lookup = %d, %v", n, err)
	}
}

// lookupFake adds a counted gRPC Lookup to dataFake.
type lookupFake struct {
	*dataFake
	lookups atomic.Int32
}

func (f *lookupFake) Lookup(_ context.Context, req *kvcachev1.LookupRequest) (*kvcachev1.LookupResponse, error) {
	f.lookups.Add(1)
	resp := &kvcachev1.LookupResponse{}
	run := true
	for _, kb := range req.GetKeys() {
		_, ok := f.blocks[prefix.Key(kb)]
		resp.Present = append(resp.Present, ok)
		if run = run && ok; run {
			resp.PrefixLen++
		}
	}
	return resp, nil
}

// oldDataPlane is a version-1 node from before the lookup extension: it
// refuses any flag but stop-at-miss with code 3 and closes. It counts
// the requests it refused.
func oldDataPlane(t *testing.T, refused *atomic.Int32) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				var h [dataplane.RequestHeaderSize]byte
				if _, err := nc.Read(h[:]); err != nil {
					return
				}
				if h[5]&^dataplane.FlagStopAtMiss != 0 {
					refused.Add(1)
					msg := "unknown flags"
					frame := []byte{byte(dataplane.StatusRequestError), byte(1 + len(msg)), 0, 0, 0, dataplane.CodeBadFlags}
					_, _ = nc.Write(append(frame, msg...))
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func TestLookupFallsBackToGRPC(t *testing.T) {
	ns := prefix.Namespace{32}
	blocks, _ := chain(t, ns, 4, 32)
	served := map[prefix.Key][]byte{}
	for _, b := range blocks[:3] {
		served[b.Key] = b.Data
	}
	refusedL, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := refusedL.Addr().String()
	refusedL.Close()
	var oldRefused atomic.Int32
	for name, addr := range map[string]string{
		"old node":          oldDataPlane(t, &oldRefused),
		"refused":           deadAddr,
		"answers garbage":   brokenData(t, false),
		"not a data plane":  serveFake(t, &dataFake{}),
		"no data plane":     "",
		"host-relative bad": ":1",
	} {
		t.Run(name, func(t *testing.T) {
			f := &lookupFake{dataFake: &dataFake{dataAddr: addr, blocks: served}}
			node := serveFake(t, f)
			c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet(), CallTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for round := range 3 {
				if n, err := c.Lookup(ctxT(t), ns, keysOf(blocks)); err != nil || n != 3 {
					t.Fatalf("round %d: Lookup = %d, %v; want 3 over gRPC", round, n, err)
				}
			}
			if got := f.lookups.Load(); got != 3 {
				t.Fatalf("%d gRPC lookups for 3 calls", got)
			}
		})
	}
	// The old node was asked once: its refusal holds for a while.
	if got := oldRefused.Load(); got != 1 {
		t.Fatalf("old node refused %d lookups, want 1", got)
	}
}

// Concurrent lookups of different lengths over three nodes with two
// replicas each get their own answer (a lookup's pooled memory is never
// shared with another's), before and after a node is lost: with a second
// replica of every key, a lost node costs no hit.
func TestConcurrentLookupsAcrossNodes(t *testing.T) {
	nodes, addrs := testnode.Cluster(t, 3, cachenode.Config{DataListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: addrs, Replicas: 2, Logger: quiet(), CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{33}
	blocks, _ := chain(t, ns, 80, 33)
	const stored = 60 // and 70..79, after a gap
	if err := c.Put(ctx, ns, blocks[:stored]); err != nil {
		t.Fatal(err)
	}
	if err := c.Put(ctx, ns, blocks[70:]); err != nil {
		t.Fatal(err)
	}
	keys := keysOf(blocks)
	check := func(phase string) {
		t.Helper()
		errs := make(chan error, 4)
		for g := range 4 {
			go func() {
				for r := range 40 {
					n := 1 + (g*37+r*13)%len(keys)
					from := (g + r) % 3 * 5 // some lookups start mid-chain
					from = min(from, n-1)
					got, err := c.Lookup(ctx, ns, keys[from:n])
					want := max(min(n, stored)-from, 0)
					if err != nil || got != want {
						errs <- fmt.Errorf("%s: Lookup of keys[%d:%d] = %d, %v; want %d", phase, from, n, got, err, want)
						return
					}
				}
				errs <- nil
			}()
		}
		for range 4 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}
	check("three nodes")
	nodes[1].Stop(t)
	check("one node lost")
}

// BenchmarkLookup512 compares Lookup of 512 present keys on one node over
// gRPC and over the data plane, in the same run, with latency percentiles.
func BenchmarkLookup512(b *testing.B) {
	node := testnode.Start(b, cachenode.Config{NoSync: true, DataListen: "127.0.0.1:0"})
	ns := prefix.Namespace{0xb3}
	blocks := smallChain(b, ns, 512)
	keys := keysOf(blocks)
	for _, mode := range []string{"grpc", "dataplane"} {
		b.Run(mode, func(b *testing.B) {
			c, err := client.New(client.Config{Nodes: []string{node.Addr()}, Replicas: 1, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.UseDataPlane(mode == "dataplane")
			ctx := context.Background()
			if err := c.Put(ctx, ns, blocks); err != nil {
				b.Fatal(err)
			}
			for range 200 { // warm up: connections, address learning
				if _, err := c.Lookup(ctx, ns, keys); err != nil {
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				if n, err := c.Lookup(ctx, ns, keys); err != nil || n != len(keys) {
					b.Fatalf("Lookup = %d, %v", n, err)
				}
				lat = append(lat, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// BenchmarkLookup512Nodes3 is BenchmarkLookup512's data-plane case over
// three nodes with two replicas: the keys fan out to three calls.
func BenchmarkLookup512Nodes3(b *testing.B) {
	_, addrs := testnode.Cluster(b, 3, cachenode.Config{NoSync: true, DataListen: "127.0.0.1:0"})
	ns := prefix.Namespace{0xb4}
	blocks := smallChain(b, ns, 512)
	keys := keysOf(blocks)
	c, err := client.New(client.Config{Nodes: addrs, Replicas: 2, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Put(ctx, ns, blocks); err != nil {
		b.Fatal(err)
	}
	for range 200 {
		if _, err := c.Lookup(ctx, ns, keys); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if n, err := c.Lookup(ctx, ns, keys); err != nil || n != len(keys) {
			b.Fatalf("Lookup = %d, %v", n, err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// smallChain is a chain of n tiny blocks (Lookup cost does not depend on
// block size).
func smallChain(b *testing.B, ns prefix.Namespace, n int) []client.Block {
	b.Helper()
	s := kvblock.Shape{Tokens: 16, Layers: 1, KVHeads: 1, HeadDim: 8}
	elems := s.Tokens * s.Layers * s.KVHeads * s.HeadDim
	kv := &kvblock.KV{Shape: s, K: make([]float32, elems), V: make([]float32, elems)}
	kvs := make([]*kvblock.KV, n)
	for i := range kvs {
		kvs[i] = kv
	}
	return encodeChain(b, ns, 0, kvs)
}

// silentData is a data plane that reads requests and never answers.
func silentData(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { nc.Close() })
			go func() { _, _ = io.Copy(io.Discard, nc) }()
		}
	}()
	return lis.Addr().String()
}

// A data plane that never answers a lookup costs its hits, bounded by
// the call timeout (the exchange's own deadline, with no context of its
// own), and is not asked again over gRPC once the attempt is out of time.
func TestSilentDataPlaneLookupTimesOut(t *testing.T) {
	ns := prefix.Namespace{34}
	blocks, _ := chain(t, ns, 3, 34)
	served := map[prefix.Key][]byte{}
	for _, b := range blocks {
		served[b.Key] = b.Data
	}
	f := &lookupFake{dataFake: &dataFake{dataAddr: silentData(t), blocks: served}}
	c, err := client.New(client.Config{Nodes: []string{serveFake(t, f)}, Logger: quiet(), CallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		if n, err := c.Lookup(ctxT(t), ns, keysOf(blocks)); err != nil || n != 0 {
			t.Errorf("Lookup from a silent data plane = %d, %v; want 0, nil", n, err)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second): // a hang guard, not a latency bound
		t.Fatal("Lookup from a silent data plane did not give up")
	}
	if got := f.lookups.Load(); got != 0 {
		t.Errorf("%d gRPC lookups after the attempt ran out of time", got)
	}
}
