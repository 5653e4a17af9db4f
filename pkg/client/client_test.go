package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

var shape = kvblock.Shape{Tokens: 8, Layers: 2, KVHeads: 2, HeadDim: 16}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// chain builds n encoded f16 blocks of a token sequence with their keys and
// the KV they encode, parents linked as a worker would link them.
func chain(t *testing.T, ns prefix.Namespace, n int, salt uint32) ([]client.Block, []*kvblock.KV) {
	t.Helper()
	elems := shape.Tokens * shape.Layers * shape.KVHeads * shape.HeadDim
	kvs := make([]*kvblock.KV, n)
	for i := range kvs {
		kv := &kvblock.KV{Shape: shape, K: make([]float32, elems), V: make([]float32, elems)}
		for j := range kv.K {
			kv.K[j] = kvblock.RoundF16(float32(int(salt)+i*7+j%13) / 8)
			kv.V[j] = kvblock.RoundF16(-float32(int(salt)+i*5+j%11) / 8)
		}
		kvs[i] = kv
	}
	return encodeChain(t, ns, salt, kvs), kvs
}

func keysOf(bs []client.Block) []prefix.Key {
	out := make([]prefix.Key, len(bs))
	for i, b := range bs {
		out[i] = b.Key
	}
	return out
}

func newKVs(n int) []*kvblock.KV {
	out := make([]*kvblock.KV, n)
	for i := range out {
		out[i] = new(kvblock.KV)
	}
	return out
}

func TestAppendLookupFetchRoundTrip(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: addrs, ChunkBytes: 500})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{1}
	blocks, want := chain(t, ns, 5, 1)
	if err := c.Put(ctx, ns, blocks[:3]); err != nil {
		t.Fatal(err)
	}
	keys := keysOf(blocks)
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != 3 {
		t.Fatalf("Lookup = %d, %v; want 3", n, err)
	}
	kvs := newKVs(len(keys))
	n, err := c.Fetch(ctx, ns, keys, kvs)
	if err != nil || n != 3 {
		t.Fatalf("Fetch = %d, %v; want 3", n, err)
	}
	for i := range n {
		for j := range want[i].K {
			if kvs[i].K[j] != want[i].K[j] || kvs[i].V[j] != want[i].V[j] {
				t.Fatalf("block %d element %d: got %v/%v want %v/%v", i, j, kvs[i].K[j], kvs[i].V[j], want[i].K[j], want[i].V[j])
			}
		}
	}
}

func TestClusterSurvivesALostNode(t *testing.T) {
	nodes, addrs := testnode.Cluster(t, 3, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: addrs, Replicas: 2, CallTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{2}
	blocks, _ := chain(t, ns, 12, 2)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	// Every block is on exactly two nodes.
	var total uint64
	for _, a := range addrs {
		s, err := c.NodeStats(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		total += s.GetBlocks()
	}
	if total != 24 {
		t.Fatalf("%d block copies on the cluster, want 24 (R=2)", total)
	}
	nodes[1].Stop(t)
	keys := keysOf(blocks)
	if n, err := c.Lookup(ctx, ns, keys); err != nil || n != 12 {
		t.Fatalf("Lookup with a node down = %d, %v; want 12", n, err)
	}
	raw, err := c.FetchRaw(ctx, ns, keys, nil)
	if err != nil || len(raw) != 12 {
		t.Fatalf("FetchRaw with a node down = %d blocks, %v; want 12", len(raw), err)
	}
	for i := range raw {
		if string(raw[i]) != string(blocks[i].Data) {
			t.Fatalf("block %d differs", i)
		}
	}
}

// corruptServer serves whatever block it is given for every key.
type corruptServer struct {
	kvcachev1.UnimplementedKVCacheServiceServer
	block []byte
}

func (s *corruptServer) Get(req *kvcachev1.GetRequest, st kvcachev1.KVCacheService_GetServer) error {
	for i := range req.GetKeys() {
		if err := st.Send(&kvcachev1.GetResponse{Index: uint32(i), BlockSize: uint32(len(s.block)), Data: s.block}); err != nil {
			return err
		}
	}
	return nil
}

func serveFake(t *testing.T, srv kvcachev1.KVCacheServiceServer) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	kvcachev1.RegisterKVCacheServiceServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

func TestCorruptOrMisplacedBlocksAreMisses(t *testing.T) {
	ns := prefix.Namespace{3}
	blocks, _ := chain(t, ns, 2, 3)
	flipped := append([]byte(nil), blocks[0].Data...)
	flipped[len(flipped)-1] ^= 1
	for name, tc := range map[string]struct {
		served []byte
		keys   []prefix.Key
	}{
		"bad checksum":              {flipped, keysOf(blocks[:1])},
		"block 1 served as block 0": {blocks[1].Data, keysOf(blocks[:1])},
		"truncated":                 {blocks[0].Data[:40], keysOf(blocks[:1])},
	} {
		t.Run(name, func(t *testing.T) {
			addr := serveFake(t, &corruptServer{block: tc.served})
			c, err := client.New(client.Config{Nodes: []string{addr}, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			n, err := c.Fetch(ctxT(t), ns, tc.keys, newKVs(len(tc.keys)))
			if err != nil || n != 0 {
				t.Fatalf("Fetch of a bad block = %d, %v; want a miss and no error", n, err)
			}
		})
	}
}

// blackhole accepts connections and never answers: the slow-node case.
func blackhole(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { <-done; conn.Close() }()
		}
	}()
	return lis.Addr().String()
}

func TestDeadOrSlowNodesCostHitsNotErrors(t *testing.T) {
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := refused.Addr().String()
	refused.Close()
	for name, addr := range map[string]string{"refused": deadAddr, "blackhole": blackhole(t)} {
		t.Run(name, func(t *testing.T) {
			c, err := client.New(client.Config{Nodes: []string{addr}, CallTimeout: 200 * time.Millisecond, Retries: 1, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx := ctxT(t)
			ns := prefix.Namespace{4}
			blocks, _ := chain(t, ns, 2, 4)
			start := time.Now()
			n, err := c.Lookup(ctx, ns, keysOf(blocks))
			if err != nil || n != 0 {
				t.Errorf("Lookup = %d, %v; want 0, nil", n, err)
			}
			raw, err := c.FetchRaw(ctx, ns, keysOf(blocks), nil)
			if err != nil || len(raw) != 0 {
				t.Errorf("FetchRaw = %d, %v; want 0, nil", len(raw), err)
			}
			if err := c.Put(ctx, ns, blocks); !errors.Is(err, client.ErrUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Put to a dead node: %v, want ErrUnavailable or a deadline", err)
			}
			// Three calls, each at most two attempts of 200ms plus backoff.
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("calls to a dead node took %v", d)
			}
		})
	}
}

func TestRejectedPutMatchesSentinel(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := prefix.Namespace{7}
	blocks, _ := chain(t, ns, 1, 7)
	blocks[0].Data[len(blocks[0].Data)-1] ^= 1
	err = c.Put(ctxT(t), ns, blocks)
	var rej *client.RejectedError
	if !errors.Is(err, client.ErrCorrupt) || !errors.As(err, &rej) {
		t.Fatalf("Put of a corrupt block: %v; want ErrCorrupt and a RejectedError", err)
	}
}

func Example() {
	dir, _ := tempDir()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	node, err := cachenode.Start(ctx, cachenode.Config{Listen: "127.0.0.1:0", Data: dir, Logger: quiet()})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer func() { stop(); node.Wait(); os.RemoveAll(dir) }()

	c, _ := client.New(client.Config{Nodes: []string{node.Addr()}})
	defer c.Close()
	ns, _ := prefix.NewNamespace(prefix.Params{Model: "example", Layers: 1, KVHeads: 1, HeadDim: 4, RopeTheta: 10000, BlockTokens: 2})
	key := prefix.Next(ns.Root(), []uint32{17, 42})
	kv := &kvblock.KV{Shape: kvblock.Shape{Tokens: 2, Layers: 1, KVHeads: 1, HeadDim: 4},
		K: []float32{1, 2, 3, 4, 5, 6, 7, 8}, V: []float32{-1, -2, -3, -4, -5, -6, -7, -8}}
	data, _ := kvblock.Encode(nil, kv, kvblock.Meta{Codec: kvblock.F16, Sinks: -1})
	if err := c.Put(ctx, ns, []client.Block{{Key: key, Data: data}}); err != nil {
		fmt.Println(err)
		return
	}
	n, _ := c.Lookup(ctx, ns, []prefix.Key{key})
	out := []*kvblock.KV{new(kvblock.KV)}
	c.Fetch(ctx, ns, []prefix.Key{key}, out)
	fmt.Println(n, out[0].K, out[0].V)
	// Output: 1 [1 2 3 4 5 6 7 8] [-1 -2 -3 -4 -5 -6 -7 -8]
}
