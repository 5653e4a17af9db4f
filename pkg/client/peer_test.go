package client

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"
)

// A node's record closes everything it holds in one path: dropping the
// node (it left DNS) or closing the client closes its idle data-plane
// connections as well as its gRPC ones, and a closed set dials nothing.
func TestPeerCloseClosesDataConnections(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	eof := make(chan error, 4)
	go func() {
		for {
			nc, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				var b [1]byte
				_, err := nc.Read(b[:]) // returns when the client closes
				eof <- err
				nc.Close()
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, how := range []string{"drop", "close"} {
		ps := newPeers(dialOptions(&Config{}), dataConfig{learnTimeout: time.Second})
		const node = "127.0.0.1:1" // gRPC connects lazily: never dialled here
		p, err := ps.get(node)
		if err != nil {
			t.Fatal(err)
		}
		if len(p.conns) != connsPerNode {
			t.Fatalf("%s: %d gRPC connections, want %d", how, len(p.conns), connsPerNode)
		}
		addr := lis.Addr().String()
		p.data.addr, p.data.known = addr, true // as if learned from Stats
		dc, err := p.data.get(ctx, addr)
		if err != nil {
			t.Fatal(err)
		}
		p.data.put(dc, addr) // now idle
		if again, _ := ps.get(node); again != p {
			t.Fatalf("%s: a second get made a new record", how)
		}
		if how == "drop" {
			ps.drop(node)
		} else if err := ps.close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		select {
		case <-eof:
		case <-ctx.Done():
			t.Fatalf("%s: the idle data connection was not closed", how)
		}
		for i, cc := range p.conns {
			if s := cc.GetState(); s != connectivity.Shutdown {
				t.Fatalf("%s: gRPC connection %d is %v, want shut down", how, i, s)
			}
		}
		if a := p.data.address(ctx); a != "" {
			t.Fatalf("%s: closed record still offers data address %q", how, a)
		}
		if how == "close" {
			if _, err := ps.get(node); !errors.Is(err, ErrClosed) {
				t.Fatalf("get after close: %v, want ErrClosed", err)
			}
		}
	}
}
