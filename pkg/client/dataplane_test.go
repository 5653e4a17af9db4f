package client_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// dataRequests scrapes a node's count of data-plane requests.
func dataRequests(t *testing.T, n *testnode.Node) int {
	t.Helper()
	resp, err := http.Get("http://" + n.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "kvcache_data_requests_total{") {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			total += int(v)
		}
	}
	return total
}

func TestFetchOverDataPlane(t *testing.T) {
	node := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: []string{node.Addr()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{21}
	blocks, _ := chain(t, ns, 6, 21)
	if err := c.Put(ctx, ns, blocks[:4]); err != nil {
		t.Fatal(err)
	}
	st, err := c.NodeStats(ctx, node.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, port, _ := net.SplitHostPort(node.DataAddr()); st.GetDataAddr() != ":"+port {
		t.Fatalf("node advertises %q, want %q", st.GetDataAddr(), ":"+port)
	}
	keys := keysOf(blocks)
	var dst [][]byte
	for round := range 3 {
		raw, err := c.FetchRaw(ctx, ns, keys, dst)
		if err != nil || len(raw) != 4 {
			t.Fatalf("round %d: FetchRaw = %d blocks, %v; want 4 (then a miss)", round, len(raw), err)
		}
		for i := range raw {
			if string(raw[i]) != string(blocks[i].Data) {
				t.Fatalf("round %d: block %d differs", round, i)
			}
		}
		dst = raw
	}
	// The node counts a request after its answer is sent, which can land
	// just after the client has read it.
	waitFor(t, 5*time.Second, "3 data-plane requests for 3 fetches", func() bool { return dataRequests(t, node) >= 3 })
	// Decoding works the same.
	if n, err := c.Fetch(ctx, ns, keys, newKVs(len(keys))); err != nil || n != 4 {
		t.Fatalf("Fetch = %d, %v", n, err)
	}
	waitFor(t, 5*time.Second, "4 data-plane requests for 4 fetches", func() bool { return dataRequests(t, node) >= 4 })
	// Switched off, the same fetch goes over gRPC.
	before := dataRequests(t, node)
	c.UseDataPlane(false)
	if raw, err := c.FetchRaw(ctx, ns, keys, nil); err != nil || len(raw) != 4 {
		t.Fatalf("gRPC-only FetchRaw = %d, %v", len(raw), err)
	}
	if n := dataRequests(t, node); n != before {
		t.Fatalf("data plane used while off (%d -> %d requests)", before, n)
	}
}

func TestNodeWithoutDataPlaneServesOverGRPC(t *testing.T) {
	node := testnode.Start(t, cachenode.Config{MetricsListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: []string{node.Addr()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{22}
	blocks, _ := chain(t, ns, 3, 22)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	raw, err := c.FetchRaw(ctx, ns, keysOf(blocks), nil)
	if err != nil || len(raw) != 3 {
		t.Fatalf("FetchRaw = %d, %v", len(raw), err)
	}
	if n := dataRequests(t, node); n != 0 {
		t.Fatalf("%d data-plane requests to a node without one", n)
	}
}

// dataFake is a gRPC node that advertises dataAddr and serves Get from
// blocks (or stalls in Get when stall is set).
type dataFake struct {
	kvcachev1.UnimplementedKVCacheServiceServer
	dataAddr string
	blocks   map[prefix.Key][]byte
	stall    bool
}

func (f *dataFake) Stats(context.Context, *kvcachev1.StatsRequest) (*kvcachev1.StatsResponse, error) {
	return &kvcachev1.StatsResponse{DataAddr: f.dataAddr}, nil
}

func (f *dataFake) Get(req *kvcachev1.GetRequest, st kvcachev1.KVCacheService_GetServer) error {
	if f.stall {
		<-st.Context().Done()
		return st.Context().Err()
	}
	for i, kb := range req.GetKeys() {
		b, ok := f.blocks[prefix.Key(kb)]
		if !ok {
			return st.Send(&kvcachev1.GetResponse{Index: uint32(i), Missing: true})
		}
		if err := st.Send(&kvcachev1.GetResponse{Index: uint32(i), BlockSize: uint32(len(b)), Data: b}); err != nil {
			return err
		}
	}
	return nil
}

// brokenData listens on loopback and, for each connection, reads a
// request and answers with the start of a block it never finishes: closing
// the connection (a node killed mid-block) unless hang is set.
func brokenData(t *testing.T, hang bool) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); lis.Close() })
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				buf := make([]byte, 4096)
				if _, err := nc.Read(buf); err != nil {
					return
				}
				hdr := []byte{0, 0, 0, 0, 0}
				binary.LittleEndian.PutUint32(hdr[1:], 1<<20)
				_, _ = nc.Write(append(hdr, make([]byte, 1000)...))
				if hang {
					<-done
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func TestDataPlaneFailureFallsBackToGRPC(t *testing.T) {
	ns := prefix.Namespace{23}
	blocks, _ := chain(t, ns, 3, 23)
	served := map[prefix.Key][]byte{}
	for _, b := range blocks {
		served[b.Key] = b.Data
	}
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := refused.Addr().String()
	refused.Close()
	for name, addr := range map[string]string{
		"refused":           deadAddr,
		"closed mid-block":  brokenData(t, false),
		"not a data plane":  serveFake(t, &dataFake{}), // gRPC on the data port
		"host-relative bad": ":1",
	} {
		t.Run(name, func(t *testing.T) {
			node := serveFake(t, &dataFake{dataAddr: addr, blocks: served})
			c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet(), CallTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			for range 2 {
				raw, err := c.FetchRaw(ctxT(t), ns, keysOf(blocks), nil)
				if err != nil || len(raw) != 3 {
					t.Fatalf("FetchRaw = %d, %v; want 3 blocks over gRPC", len(raw), err)
				}
				for i := range raw {
					if string(raw[i]) != string(blocks[i].Data) {
						t.Fatalf("block %d differs", i)
					}
				}
			}
		})
	}
}

// serveData runs a data plane over st (no verification: it serves what it
// is given) and returns its address.
func serveData(t *testing.T, st store.Store) string {
	s := dataplane.NewServer(st, &dataplane.ServerOptions{Logger: quiet()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(lis)
	t.Cleanup(func() { s.Close() })
	return lis.Addr().String()
}

func TestCorruptBlockOverDataPlaneIsAMiss(t *testing.T) {
	ns := prefix.Namespace{24}
	blocks, _ := chain(t, ns, 3, 24)
	flipped := append([]byte(nil), blocks[1].Data...)
	flipped[len(flipped)-1] ^= 1
	st := store.NewMemory(&store.Options{Verify: func([]byte) (prefix.Key, bool, error) { return prefix.Key{}, false, nil }})
	defer st.Close()
	ctx := ctxT(t)
	for i, b := range [][]byte{blocks[0].Data, flipped, blocks[2].Data} {
		if _, err := st.Put(ctx, ns, blocks[i].Key, b); err != nil {
			t.Fatal(err)
		}
	}
	_, port, _ := net.SplitHostPort(serveData(t, st))
	// The gRPC side serves nothing: whatever arrives came over the data plane.
	node := serveFake(t, &dataFake{dataAddr: ":" + port})
	c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.FetchRaw(ctx, ns, keysOf(blocks), nil)
	if err != nil || len(raw) != 1 || string(raw[0]) != string(blocks[0].Data) {
		t.Fatalf("FetchRaw = %d blocks, %v; want block 0 only (block 1 is corrupt)", len(raw), err)
	}
}

func TestNodeDyingMidStreamCostsAMissWithinTheDeadline(t *testing.T) {
	ns := prefix.Namespace{25}
	blocks, _ := chain(t, ns, 2, 25)
	// The data plane stalls mid-block, and so does gRPC: a node that hangs.
	node := serveFake(t, &dataFake{dataAddr: brokenData(t, true), stall: true})
	c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet(), CallTimeout: 200 * time.Millisecond, Retries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	raw, err := c.FetchRaw(ctxT(t), ns, keysOf(blocks), nil)
	if err != nil || len(raw) != 0 {
		t.Fatalf("FetchRaw = %d, %v; want a miss and no error", len(raw), err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v with a 200ms call timeout", d)
	}
	// A caller's deadline bounds it too.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, _ = c.FetchRaw(ctx, ns, keysOf(blocks), nil)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v with a 300ms deadline", d)
	}

	// A real node killed between fetches: a miss, no error.
	real := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0"})
	c2, err := client.New(client.Config{Nodes: []string{real.Addr()}, Logger: quiet(), CallTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.Put(ctxT(t), ns, blocks); err != nil {
		t.Fatal(err)
	}
	if raw, err := c2.FetchRaw(ctxT(t), ns, keysOf(blocks), nil); err != nil || len(raw) != 2 {
		t.Fatalf("FetchRaw = %d, %v", len(raw), err)
	}
	real.Stop(t)
	start = time.Now()
	if raw, err := c2.FetchRaw(ctxT(t), ns, keysOf(blocks), nil); err != nil || len(raw) != 0 {
		t.Fatalf("FetchRaw from a stopped node = %d, %v; want a miss", len(raw), err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
}
