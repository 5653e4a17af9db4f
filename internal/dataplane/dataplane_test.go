package dataplane_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serve starts a data-plane server over st on a loopback port 0 and
// returns its address and a channel of per-request outcomes.
func serve(t *testing.T, st store.Store, o dataplane.ServerOptions) (string, chan error) {
	t.Helper()
	reqs := make(chan error, 100)
	o.Logger = quiet()
	o.OnRequest = func(_, _ int, _ int64, err error) {
		select {
		case reqs <- err:
		default:
		}
	}
	return serveBlocks(t, st, o), reqs
}

func memStore(t *testing.T) *store.Memory {
	st := store.NewMemory(&store.Options{Verify: storetest.Verify, MaxBlockBytes: 8 << 20})
	t.Cleanup(func() { st.Close() })
	return st
}

// The bound is generous on purpose: it only stops a hung test, and a
// loaded 2-core machine under -race needed 21 s for TestStuckReaderIsCut.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// collect is a Sink that keeps every block in its own buffer.
type collect struct {
	blocks map[int][]byte
	found  map[int]bool
	chunks int
}

func (c *collect) sink() dataplane.Sink {
	c.blocks, c.found = map[int][]byte{}, map[int]bool{}
	return dataplane.Sink{
		Block: func(j, n int) []byte { c.blocks[j] = make([]byte, n); return c.blocks[j] },
		Chunk: func(j, off int, p []byte) { c.chunks++ },
		Done:  func(j int, found bool) { c.found[j] = found },
	}
}

func TestRoundTripSizesAndMisses(t *testing.T) {
	st := memStore(t)
	ns := storetest.Namespace("rt")
	sizes := []int{0, 1, 4096, 65536 + 7, 1 << 20, 3<<20 + 5}
	var keys []prefix.Key
	var want [][]byte
	ctx := ctxT(t)
	for i, n := range sizes {
		k := storetest.Key(string(rune('a' + i)))
		b := storetest.Block(nil, storetest.Payload(k.String(), n))
		if _, err := st.Put(ctx, ns, k, b); err != nil {
			t.Fatal(err)
		}
		keys, want = append(keys, k), append(want, b)
	}
	addr, _ := serve(t, st, dataplane.ServerOptions{})
	dc, err := dataplane.Dial(ctx, addr, dataplane.DialOptions{Chunk: 100 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	// Twice on one connection: responses leave it clean for the next.
	for round := range 2 {
		var c collect
		if err := dc.Get(ctx, 0, ns, keys, c.sink()); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		for j := range keys {
			if !c.found[j] || !bytes.Equal(c.blocks[j], want[j]) {
				t.Fatalf("round %d block %d (%d bytes): found %v, equal %v", round, j, len(want[j]), c.found[j], bytes.Equal(c.blocks[j], want[j]))
			}
		}
	}
	// A missing key in the middle: without stop-at-miss the rest follows.
	missing := storetest.Key("absent")
	mixed := []prefix.Key{keys[1], missing, keys[2]}
	var c collect
	if err := dc.Get(ctx, 0, ns, mixed, c.sink()); err != nil {
		t.Fatal(err)
	}
	if !c.found[0] || c.found[1] || !c.found[2] || len(c.found) != 3 {
		t.Fatalf("found %v, want true false true", c.found)
	}
	// With stop-at-miss the response ends at the miss, and the
	// connection carries the next request.
	if err := dc.Get(ctx, dataplane.FlagStopAtMiss, ns, mixed, c.sink()); err != nil {
		t.Fatal(err)
	}
	if !c.found[0] || c.found[1] || len(c.found) != 2 {
		t.Fatalf("stop at miss: found %v, want keys 0 (hit) and 1 (miss) only", c.found)
	}
	if err := dc.Get(ctx, dataplane.FlagStopAtMiss, ns, keys[:1], c.sink()); err != nil || !c.found[0] {
		t.Fatalf("request after stop-at-miss: %v, %v", err, c.found)
	}
	if dc.Broken() {
		t.Fatal("connection broken after clean responses")
	}
}

// rawRequest sends b and returns everything the node answers until it
// closes the connection.
func rawRequest(t *testing.T, addr string, b []byte) []byte {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(nc)
	if err != nil {
		t.Fatalf("reading the answer: %v (the node must close after an error frame)", err)
	}
	return out
}

func TestMalformedRequestsGetAnErrorFrame(t *testing.T) {
	st := memStore(t)
	addr, _ := serve(t, st, dataplane.ServerOptions{MaxKeys: 16, ReadTimeout: 200 * time.Millisecond})
	ns, k := storetest.Namespace("m"), storetest.Key("k")
	good := dataplane.AppendRequest(nil, 0, ns, []prefix.Key{k})
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, tc := range map[string]struct {
		req  []byte
		code byte
	}{
		"bad magic":     {with(func(b []byte) []byte { b[0] = 'X'; return b }), dataplane.CodeBadMagic},
		"version 9":     {with(func(b []byte) []byte { b[4] = 9; return b }), dataplane.CodeBadVersion},
		"unknown flag":  {with(func(b []byte) []byte { b[5] = 0x80; return b }), dataplane.CodeBadFlags},
		"reserved byte": {with(func(b []byte) []byte { b[7] = 1; return b }), dataplane.CodeBadFlags},
		"zero keys":     {with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0); return b[:dataplane.RequestHeaderSize] }), dataplane.CodeBadCount},
		"over limit":    {with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 17); return b }), dataplane.CodeBadCount},
		"4G keys":       {with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0xFFFFFFFF); return b }), dataplane.CodeBadCount},
		"http":          {[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n" + string(make([]byte, 40))), dataplane.CodeBadMagic},
	} {
		t.Run(name, func(t *testing.T) {
			out := rawRequest(t, addr, tc.req)
			rr := dataplane.ResponseReader{R: bytes.NewReader(out)}
			s, _, err := rr.Next()
			var re *dataplane.RemoteError
			if s != dataplane.StatusRequestError || !errors.As(err, &re) || re.Code != tc.code {
				t.Fatalf("answer %q: status %#x, %v; want a request error with code %d", out, s, err, tc.code)
			}
		})
	}
	// A request cut short is dropped without an answer, and the node
	// still serves.
	if out := rawRequest(t, addr, good[:len(good)-3]); len(out) != 0 {
		t.Fatalf("truncated request got %q", out)
	}
	dc, err := dataplane.Dial(ctxT(t), addr, dataplane.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	var c collect
	if err := dc.Get(ctxT(t), 0, ns, []prefix.Key{k}, c.sink()); err != nil || c.found[0] {
		t.Fatalf("after malformed requests: %v, found %v", err, c.found)
	}
}

// A client that stops reading loses its connection after WriteTimeout, so
// it cannot hold a read transaction open.
func TestStuckReaderIsCut(t *testing.T) {
	st := memStore(t)
	ns := storetest.Namespace("stuck")
	ctx := ctxT(t)
	var keys []prefix.Key
	for i := range 8 {
		k := storetest.Key(string(rune('a' + i)))
		if _, err := st.Put(ctx, ns, k, storetest.Block(nil, storetest.Payload(k.String(), 4<<20))); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	addr, reqs := serve(t, st, dataplane.ServerOptions{WriteTimeout: 100 * time.Millisecond, WriteBuffer: 64 << 10})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, err := nc.Write(dataplane.AppendRequest(nil, 0, ns, keys)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reqs:
		if err == nil {
			t.Fatal("32 MiB went to a client that reads nothing")
		}
	case <-ctx.Done():
		t.Fatal("the node never gave up on a client that reads nothing")
	}
}

func TestDeadlineFromContext(t *testing.T) {
	// A node that accepts and never answers.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
		}
	}()
	dc, err := dataplane.Dial(ctxT(t), lis.Addr().String(), dataplane.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	var c collect
	err = dc.Get(ctx, 0, storetest.Namespace("x"), []prefix.Key{storetest.Key("x")}, c.sink())
	if !errors.Is(err, context.DeadlineExceeded) || !dc.Broken() {
		t.Fatalf("Get from a silent node: %v (broken %v), want the deadline", err, dc.Broken())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	// Cancellation without a deadline interrupts too.
	dc2, err := dataplane.Dial(ctxT(t), lis.Addr().String(), dataplane.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dc2.Close()
	cctx, ccancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- dc2.Get(cctx, 0, storetest.Namespace("x"), []prefix.Key{storetest.Key("x")}, c.sink()) }()
	ccancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Get: %v", err)
	}
}

func TestResponseLimits(t *testing.T) {
	frame := func(s byte, n uint32, payload ...byte) []byte {
		b := []byte{s, 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], n)
		return append(b, payload...)
	}
	for name, in := range map[string][]byte{
		"block over limit":  frame(0, 1<<20+1),
		"missing with data": frame(1, 3, 1, 2, 3),
		"empty error":       frame(2, 0),
		"huge error":        frame(0xFF, 1<<30),
		"unknown status":    frame(7, 0),
	} {
		rr := dataplane.ResponseReader{R: bytes.NewReader(in), MaxBlock: 1 << 20}
		if _, _, err := rr.Next(); !errors.Is(err, dataplane.ErrProtocol) {
			t.Errorf("%s: %v, want a protocol error", name, err)
		}
	}
}

// LookupUntil gives up at its own deadline, the earlier of it and ctx's,
// and on ctx's cancellation, each as if ctx had ended.
func TestLookupUntilDeadline(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	asked := make(chan struct{}, 10)
	go func() { // a node that reads requests and never answers
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			defer nc.Close()
			go func() {
				var b [1]byte
				if _, err := nc.Read(b[:]); err == nil {
					asked <- struct{}{}
				}
			}()
		}
	}()
	ns, keys := storetest.Namespace("x"), []prefix.Key{storetest.Key("x")}
	far := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		dl     time.Time
		cancel bool // cancel ctx while the lookup waits
		want   error
	}{
		{"own deadline", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			time.Now().Add(100 * time.Millisecond), false, context.DeadlineExceeded},
		{"ctx's earlier deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, far, false, context.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			far, true, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dc, err := dataplane.Dial(ctxT(t), lis.Addr().String(), dataplane.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()
			ctx, cancel := tc.ctx()
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				_, err := dc.LookupUntil(ctx, tc.dl, ns, keys, nil, nil)
				errc <- err
			}()
			<-asked // the request is out: an interruption breaks the connection
			if tc.cancel {
				cancel()
			}
			if err := <-errc; !errors.Is(err, tc.want) || !dc.Broken() {
				t.Fatalf("LookupUntil from a silent node: %v (broken %v), want %v", err, dc.Broken(), tc.want)
			}
		})
	}
}
