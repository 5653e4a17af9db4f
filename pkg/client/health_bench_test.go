package client_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// bigChain builds n f16 blocks shaped like a small real model (16 tokens
// x 8 layers x 8 kv heads x 128 head dim, f16: 512 KiB each).
func bigChain(b *testing.B, ns prefix.Namespace, n int) []client.Block {
	b.Helper()
	s := kvblock.Shape{Tokens: 16, Layers: 8, KVHeads: 8, HeadDim: 128}
	elems := s.Tokens * s.Layers * s.KVHeads * s.HeadDim
	kvs := make([]*kvblock.KV, n)
	for i := range kvs {
		kv := &kvblock.KV{Shape: s, K: make([]float32, elems), V: make([]float32, elems)}
		for j := range kv.K {
			kv.K[j], kv.V[j] = float32(j%17)/8, -float32(j%13)/8
		}
		kvs[i] = kv
	}
	return encodeChain(b, ns, 0, kvs)
}

// BenchmarkFetchThroughput fetches a 64-block prefix (R=1, so each node
// serves its share) from 1 node and from 3; MB/s is the aggregate rate.
func BenchmarkFetchThroughput(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(map[int]string{1: "1node", 3: "3nodes"}[nodes], func(b *testing.B) {
			_, addrs := testnode.Cluster(b, nodes, cachenode.Config{NoSync: true})
			c, err := client.New(client.Config{Nodes: addrs, Replicas: 1, CallTimeout: 10 * time.Second, Logger: quiet()})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ctx := context.Background()
			ns := prefix.Namespace{0xb1}
			blocks := bigChain(b, ns, 64)
			if err := c.Put(ctx, ns, blocks); err != nil {
				b.Fatal(err)
			}
			keys := keysOf(blocks)
			total := 0
			for _, bl := range blocks {
				total += len(bl.Data)
			}
			var dst [][]byte
			b.SetBytes(int64(total))
			b.ResetTimer()
			for range b.N {
				dst, err = c.FetchRaw(ctx, ns, keys, dst)
				if err != nil || len(dst) != len(keys) {
					b.Fatalf("fetched %d of %d: %v", len(dst), len(keys), err)
				}
			}
		})
	}
}

// BenchmarkLookupLatency reports p50 and p99 of a 64-key lookup over 3
// nodes with R=2.
func BenchmarkLookupLatency(b *testing.B) {
	_, addrs := testnode.Cluster(b, 3, cachenode.Config{NoSync: true})
	c, err := client.New(client.Config{Nodes: addrs, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	ns := prefix.Namespace{0xb2}
	blocks := bigChain(b, ns, 64)
	if err := c.Put(ctx, ns, blocks); err != nil {
		b.Fatal(err)
	}
	keys := keysOf(blocks)
	lat := make([]time.Duration, 0, b.N)
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

// BenchmarkFailover measures, with the default health settings, the time
// from a node's death to its ejection, from its return to re-admission,
// and from its return to full traffic (end of slow start).
func BenchmarkFailover(b *testing.B) {
	for range b.N {
		nodes, addrs := testnode.Cluster(b, 3, cachenode.Config{NoSync: true})
		c, err := client.New(client.Config{Nodes: addrs, Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		victim, dir := addrs[1], nodes[1].Dir
		state := func() (client.State, float64) {
			for _, m := range c.Members() {
				if m.Addr == victim {
					return m.State, m.ReadShare
				}
			}
			return -1, 0
		}
		poll := func(cond func() bool) time.Duration {
			start := time.Now()
			for !cond() {
				if time.Since(start) > time.Minute {
					b.Fatal("timed out")
				}
				time.Sleep(time.Millisecond)
			}
			return time.Since(start)
		}
		nodes[1].Stop(b)
		eject := poll(func() bool { s, _ := state(); return s == client.Ejected })
		back := time.Now()
		testnode.Start(b, cachenode.Config{Listen: victim, Data: dir, NoSync: true})
		readmit := poll(func() bool { s, _ := state(); return s == client.Warming || s == client.Healthy })
		poll(func() bool { _, share := state(); return share >= 1 })
		full := time.Since(back)
		b.ReportMetric(eject.Seconds(), "s-death-to-eject")
		b.ReportMetric(readmit.Seconds(), "s-return-to-readmit")
		b.ReportMetric(full.Seconds(), "s-return-to-full")
		c.Close()
	}
}
