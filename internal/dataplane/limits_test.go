package dataplane_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// blockingStore's View, once block is set, signals entered and waits for
// release: a request that is deterministically in progress.
type blockingStore struct {
	*store.Memory
	block   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) View(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, fn func(int, []byte, bool) error) error {
	if b.block.Load() {
		b.entered <- struct{}{}
		<-b.release
	}
	return b.Memory.View(ctx, ns, keys, fn)
}

// serveBlocks starts a data-plane server over st on a loopback port 0,
// closed when the test ends, and returns its address.
func serveBlocks(t *testing.T, st dataplane.Blocks, o dataplane.ServerOptions) string {
	t.Helper()
	o.Logger = quiet()
	s := dataplane.NewServer(st, &o)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(lis) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, dataplane.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return lis.Addr().String()
}

// dialFrom dials addr from the loopback address local (127.0.0.0/8 are
// all the local host on Linux), so a test can be several clients.
func dialFrom(ctx context.Context, t *testing.T, local, addr string) *dataplane.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Skipf("cannot dial from %s: %v", local, err)
	}
	dc := dataplane.NewConn(nc, dataplane.DialOptions{})
	t.Cleanup(func() { dc.Close() })
	return dc
}

func getErr(ctx context.Context, dc *dataplane.Conn) error {
	var c collect
	return dc.Get(ctx, 0, storetest.Namespace("lim"), []prefix.Key{storetest.Key("x")}, c.sink())
}

func isBusy(err error) bool {
	var re *dataplane.RemoteError
	return errors.As(err, &re) && re.Code == dataplane.CodeBusy
}

// TestConnectionLimits: a full data plane closes its longest-idle
// connection for a new client and refuses only when every slot is serving
// a request; one address cannot take more than MaxConnsPerAddr.
func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name       string
		opts       dataplane.ServerOptions
		firstBusy  bool   // the first connection is mid-request when the second comes
		secondFrom string // local address of the second client
		wantBusy   bool   // the second is refused
		firstGone  bool   // the first connection was closed for the second
	}{
		{"idle slot is reclaimed", dataplane.ServerOptions{MaxConns: 1}, false, "127.0.0.2", false, true},
		{"busy slots refuse", dataplane.ServerOptions{MaxConns: 1}, true, "127.0.0.2", true, false},
		{"per-address limit", dataplane.ServerOptions{MaxConns: 8, MaxConnsPerAddr: 1}, false, "127.0.0.1", true, false},
		{"other address is not limited", dataplane.ServerOptions{MaxConns: 8, MaxConnsPerAddr: 1}, false, "127.0.0.2", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := &blockingStore{Memory: memStore(t), entered: make(chan struct{}, 1), release: make(chan struct{})}
			addr := serveBlocks(t, st, tc.opts)
			ctx := ctxT(t)
			var firstDC *dataplane.Conn
			if tc.firstBusy {
				// The first connection's request is in the store (View
				// blocks until release): its slot is serving, not idle.
				st.block.Store(true)
				busy := dialFrom(ctx, t, "127.0.0.1", addr)
				go getErr(ctx, busy)
				<-st.entered
				defer close(st.release)
			} else {
				firstDC = dialFrom(ctx, t, "127.0.0.1", addr)
				if err := getErr(ctx, firstDC); err != nil {
					t.Fatalf("first connection: %v", err)
				}
			}
			second := dialFrom(ctx, t, tc.secondFrom, addr)
			err := getErr(ctx, second)
			if got := isBusy(err); got != tc.wantBusy || (!tc.wantBusy && err != nil) {
				t.Fatalf("second connection: %v; want busy %v", err, tc.wantBusy)
			}
			if firstDC != nil {
				err := getErr(ctx, firstDC)
				if gone := err != nil; gone != tc.firstGone {
					t.Errorf("first connection after the second: %v; want closed %v", err, tc.firstGone)
				}
			}
		})
	}
}
