package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// collect is a FetchRawFunc callback that checks blocks come in order and
// keeps them.
type collect struct {
	t      *testing.T
	blocks [][]byte
}

func (c *collect) fn(i int, blk []byte) error {
	if i != len(c.blocks) {
		c.t.Errorf("got block %d after %d blocks", i, len(c.blocks))
	}
	c.blocks = append(c.blocks, blk)
	return nil
}

// check fails unless the collected blocks are want, each in its own
// buffer.
func (c *collect) check(want []client.Block) {
	c.t.Helper()
	if len(c.blocks) != len(want) {
		c.t.Fatalf("got %d blocks, want %d", len(c.blocks), len(want))
	}
	seen := map[*byte]int{}
	for i, b := range c.blocks {
		if string(b) != string(want[i].Data) {
			c.t.Fatalf("block %d differs", i)
		}
		if j, ok := seen[&b[0]]; ok {
			c.t.Fatalf("blocks %d and %d share a buffer", j, i)
		}
		seen[&b[0]] = i
	}
}

// FetchRawFunc delivers exactly what FetchRaw returns, in order, from one
// node or several, after a parent or not.
func TestFetchRawFuncDeliversThePrefixInOrder(t *testing.T) {
	ns := prefix.Namespace{31}
	blocks, _ := chain(t, ns, 12, 31)
	other, _ := chain(t, ns, 2, 32)
	keys := keysOf(blocks)
	for _, nodes := range []int{1, 3} {
		_, addrs := testnode.Cluster(t, nodes, cachenode.Config{DataListen: "127.0.0.1:0"})
		c, err := client.New(client.Config{Nodes: addrs, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx := ctxT(t)
		// Block 9 is missing: the prefix ends at 9.
		if err := c.Put(ctx, ns, append(append(blocks[:9:9], blocks[10:]...), other...)); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name   string
			parent *prefix.Key // FetchRawAfterFunc when set
			from   int         // keys[from:to] are asked for
			to     int
			want   int
		}{
			{"whole chain", nil, 0, 9, 9},
			{"up to a gap", nil, 0, 12, 9},
			{"one block", nil, 0, 1, 1},
			{"a suffix has a parent", nil, 3, 9, 0},
			{"after a parent", &keys[2], 3, 12, 6},
			{"after the wrong parent", &keys[1], 3, 9, 0},
			{"after another chain's block", &other[1].Key, 3, 9, 0},
			{"nothing asked", nil, 0, 0, 0},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				col := &collect{t: t}
				var n int
				var err error
				if tt.parent != nil {
					n, err = c.FetchRawAfterFunc(ctx, ns, *tt.parent, keys[tt.from:tt.to], nil, col.fn)
				} else {
					n, err = c.FetchRawFunc(ctx, ns, keys[tt.from:tt.to], nil, col.fn)
				}
				if err != nil || n != tt.want {
					t.Fatalf("%d nodes: fetch = %d, %v; want %d", nodes, n, err, tt.want)
				}
				col.check(blocks[tt.from : tt.from+tt.want])
				raw, err := c.FetchRaw(ctx, ns, keys[tt.from:tt.to], nil)
				if tt.parent != nil {
					raw, err = c.FetchRawAfter(ctx, ns, *tt.parent, keys[tt.from:tt.to], nil)
				}
				if err != nil || len(raw) != n {
					t.Fatalf("FetchRaw = %d, %v; FetchRawFunc took %d", len(raw), err, n)
				}
			})
		}
	}
}

// Lent buffers are read into (and handed to fn) when they fit.
func TestFetchRawFuncReusesLentBuffers(t *testing.T) {
	node := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0"})
	c, err := client.New(client.Config{Nodes: []string{node.Addr()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{33}
	blocks, _ := chain(t, ns, 4, 33)
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	dst := make([][]byte, 4)
	for i := range dst {
		dst[i] = make([]byte, 0, len(blocks[i].Data))
	}
	dst[3] = dst[3][:0:10] // too small: a new buffer
	col := &collect{t: t}
	if n, err := c.FetchRawFunc(ctx, ns, keysOf(blocks), dst, col.fn); err != nil || n != 4 {
		t.Fatalf("FetchRawFunc = %d, %v", n, err)
	}
	col.check(blocks)
	for i, b := range col.blocks {
		if lent := &dst[i][:1][0] == &b[0]; lent != (i < 3) {
			t.Errorf("block %d in the lent buffer: %v", i, lent)
		}
	}
}

// A damaged or misplaced block ends the prefix before it, as for FetchRaw.
func TestFetchRawFuncStopsAtABadBlock(t *testing.T) {
	ns := prefix.Namespace{34}
	blocks, _ := chain(t, ns, 4, 34)
	other, _ := chain(t, ns, 3, 35)
	flipped := append([]byte(nil), blocks[2].Data...)
	flipped[len(flipped)-1] ^= 1
	for _, tt := range []struct {
		name   string
		served []byte // as block 2
	}{
		{"bad checksum", flipped},
		{"another chain's block", other[2].Data},
		{"block 1 again", blocks[1].Data},
		{"truncated", blocks[2].Data[:40]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := store.NewMemory(&store.Options{Verify: func([]byte) (prefix.Key, bool, error) { return prefix.Key{}, false, nil }})
			defer st.Close()
			ctx := ctxT(t)
			for i, b := range [][]byte{blocks[0].Data, blocks[1].Data, tt.served, blocks[3].Data} {
				if _, err := st.Put(ctx, ns, blocks[i].Key, b); err != nil {
					t.Fatal(err)
				}
			}
			_, port, _ := net.SplitHostPort(serveData(t, st))
			node := serveFake(t, &dataFake{dataAddr: ":" + port})
			c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			col := &collect{t: t}
			if n, err := c.FetchRawFunc(ctx, ns, keysOf(blocks), nil, col.fn); err != nil || n != 2 {
				t.Fatalf("FetchRawFunc = %d, %v; want blocks 0 and 1", n, err)
			}
			col.check(blocks[:2])
		})
	}
}

// cutProxy forwards connections to target and passes the first limit
// bytes of each response, then closes the connection, or with hang holds
// it open and silent until the test ends.
func cutProxy(t *testing.T, target string, limit int64, hang bool) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); lis.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				nc.Close()
				continue
			}
			gone := make(chan struct{}) // the client closed
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, nc); close(gone); up.Close() }()
			go func() {
				defer wg.Done()
				_, _ = io.CopyN(nc, up, limit)
				if hang {
					select {
					case <-done:
					case <-gone:
					}
				}
				nc.Close()
				up.Close()
			}()
		}
	}()
	return lis.Addr().String()
}

// frames is the size of the data-plane response frames of blocks.
func frames(blocks []client.Block) int64 {
	var n int64
	for _, b := range blocks {
		n += int64(5 + len(b.Data))
	}
	return n
}

// A node whose data connection dies mid-stream, after some blocks: the
// blocks delivered before stay delivered (and are not written again when
// the rest is read over gRPC); the prefix is as long as gRPC can serve.
func TestFetchRawFuncNodeDyingMidStream(t *testing.T) {
	ns := prefix.Namespace{36}
	blocks, _ := chain(t, ns, 6, 36)
	real := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0"})
	{
		c, err := client.New(client.Config{Nodes: []string{real.Addr()}, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Put(ctxT(t), ns, blocks); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	served := map[prefix.Key][]byte{}
	for _, b := range blocks {
		served[b.Key] = b.Data
	}
	cut := frames(blocks[:3]) + 100 // blocks 0-2 whole, then part of block 3
	for _, tt := range []struct {
		name  string
		hang  bool
		grpc  *dataFake
		want  int
		limit time.Duration // how long the fetch may take
	}{
		{"closed, gRPC serves the rest", false, &dataFake{blocks: served}, 6, 10 * time.Second},
		{"closed, gRPC has nothing", false, &dataFake{}, 3, 10 * time.Second},
		{"hung, gRPC hangs too", true, &dataFake{stall: true}, 3, 5 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(cutProxy(t, real.DataAddr(), cut, tt.hang))
			tt.grpc.dataAddr = ":" + port
			node := serveFake(t, tt.grpc)
			c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet(), CallTimeout: 300 * time.Millisecond, Retries: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			col := &collect{t: t}
			start := time.Now()
			n, err := c.FetchRawFunc(ctxT(t), ns, keysOf(blocks), nil, col.fn)
			if err != nil || n != tt.want {
				t.Fatalf("FetchRawFunc = %d, %v; want %d", n, err, tt.want)
			}
			if d := time.Since(start); d > tt.limit {
				t.Fatalf("took %v", d)
			}
			col.check(blocks[:tt.want])
		})
	}
}

// An error from fn, or the end of ctx, stops the fetch at once, also one
// still waiting for its node, and leaves no goroutine behind.
func TestFetchRawFuncStopsEarly(t *testing.T) {
	ns := prefix.Namespace{37}
	blocks, _ := chain(t, ns, 8, 37)
	real := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0"})
	c0, err := client.New(client.Config{Nodes: []string{real.Addr()}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer c0.Close()
	if err := c0.Put(ctxT(t), ns, blocks); err != nil {
		t.Fatal(err)
	}
	// The data plane sends blocks 0-3 and then nothing: the fetch is in
	// flight when fn stops it; gRPC stalls, so nothing else delivers.
	_, port, _ := net.SplitHostPort(cutProxy(t, real.DataAddr(), frames(blocks[:4]), true))
	node := serveFake(t, &dataFake{dataAddr: ":" + port, stall: true})
	errStop := errors.New("stop")
	tests := []struct {
		name    string
		stopAt  int // fn's block that stops the fetch
		cancel  bool
		want    int
		wantErr error
	}{
		{"fn fails at block 0", 0, false, 0, errStop},
		{"fn fails at block 3", 3, false, 3, errStop},
		{"ctx cancelled in block 1", 1, true, 2, context.Canceled},
		{"ctx cancelled in block 3, the stream waiting", 3, true, 4, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Checked after the client is closed (its background work
			// is no leak; calls of the fetch still running would be).
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			c, err := client.New(client.Config{Nodes: []string{node}, Logger: quiet(), CallTimeout: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			took := 0
			start := time.Now()
			n, err := c.FetchRawFunc(ctx, ns, keysOf(blocks), nil, func(i int, blk []byte) error {
				if string(blk) != string(blocks[i].Data) {
					t.Errorf("block %d differs", i)
				}
				took++
				if i == tt.stopAt {
					if tt.cancel {
						cancel()
						return nil
					}
					return errStop
				}
				return nil
			})
			if n != tt.want || !errors.Is(err, tt.wantErr) {
				t.Fatalf("FetchRawFunc = %d, %v; want %d, %v", n, err, tt.want, tt.wantErr)
			}
			if took != tt.stopAt+1 {
				t.Fatalf("fn took %d blocks, want %d", took, tt.stopAt+1)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("took %v with a one-minute call timeout", d)
			}
		})
	}
}
