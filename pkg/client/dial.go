package client

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/experimental"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/internal/grpcmem"
)

// Every connection the client makes is made here: dialOptions builds the
// gRPC options (transport security belongs there), dialGRPC opens one
// gRPC connection and dialData one data-plane connection.

// maxMsg covers the server's largest chunk plus framing.
const maxMsg = 8 << 20

// recvPool is the buffer pool of the client's connections: grpc's default
// pool clears every buffer it hands out, a memclr of every received byte
// that profiles of Get showed as a tenth of the client's CPU.
var recvPool = grpcmem.NewDirtyPool()

// dialOptions are the options of every gRPC connection: the defaults, then
// cfg.DialOptions (which may override them).
func dialOptions(cfg *Config) []grpc.DialOption {
	creds := insecure.NewCredentials()
	if cfg.TLS != nil {
		creds = credentials.NewTLS(cfg.TLS)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)),
		// Reconnect quickly after a node returns: the default backoff
		// grows to 2 minutes, which would keep a restarted node ejected.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		experimental.WithBufferPool(recvPool),
	}
	if cfg.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: cfg.Token}))
	}
	return append(opts, cfg.DialOptions...)
}

// bearer sends the client's token with every call.
type bearer struct{ token string }

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so a token also works without TLS
// (loopback, a private network); docs/security.md says what that exposes.
func (b bearer) RequireTransportSecurity() bool { return false }

// dialGRPC makes a new gRPC connection to addr. It does not wait for the
// connection: grpc connects lazily and reconnects by itself.
func dialGRPC(addr string, opts []grpc.DialOption) (*grpc.ClientConn, error) {
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w: %v", addr, ErrUnavailable, err)
	}
	return cc, nil
}

// dialData opens a data-plane connection to a node's data address, with
// the client's data-plane settings (where transport security goes).
func dialData(ctx context.Context, addr string, cfg dataConfig) (*dataplane.Conn, error) {
	return dataplane.Dial(ctx, addr, dataplane.DialOptions{TLS: cfg.tls, Token: cfg.token})
}
