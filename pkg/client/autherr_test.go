package client_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/auth/authtest"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// TestAuthErrorsHaveTheirOwnSentinels: against a real node with tokens, a
// call with no token or an unknown one is ErrUnauthenticated and a read
// token storing blocks or a tenant asking for node stats is
// ErrPermissionDenied, neither of them ErrUnavailable (the node is up: it
// is the credentials that need fixing); a write token succeeds.
func TestAuthErrorsHaveTheirOwnSentinels(t *testing.T) {
	const writer, reader = "writer-0123456789abcdef", "reader-0123456789abcdef"
	ca := authtest.NewCA(t, "client auth CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte(writer+" acme write\n"+reader+" acme read\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{NoSync: true, Security: cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf}})
	shape := kvblock.Shape{Tokens: 16, Layers: 1, KVHeads: 1, HeadDim: 8}
	kv := kvblock.KV{Shape: shape, K: make([]float32, shape.Elements()), V: make([]float32, shape.Elements())}
	data, err := kvblock.Encode(nil, &kv, kvblock.Meta{Codec: kvblock.Int8, Sinks: -1})
	if err != nil {
		t.Fatal(err)
	}
	ns := prefix.Namespace(sha256.Sum256([]byte("auth ns")))
	blocks := []client.Block{{Key: prefix.Key(sha256.Sum256([]byte("k"))), Data: data}}

	tests := []struct {
		name  string
		token string
		call  func(context.Context, *client.Client) error
		want  error // nil: succeeds
	}{
		{"put without a token", "", func(ctx context.Context, c *client.Client) error { return c.Put(ctx, ns, blocks) }, client.ErrUnauthenticated},
		{"put with an unknown token", "nobody-0123456789abcdef", func(ctx context.Context, c *client.Client) error { return c.Put(ctx, ns, blocks) }, client.ErrUnauthenticated},
		{"stats without a token", "", func(ctx context.Context, c *client.Client) error { _, err := c.NodeStats(ctx, n.Addr()); return err }, client.ErrUnauthenticated},
		{"put with a read token", reader, func(ctx context.Context, c *client.Client) error { return c.Put(ctx, ns, blocks) }, client.ErrPermissionDenied},
		{"put with a write token", writer, func(ctx context.Context, c *client.Client) error { return c.Put(ctx, ns, blocks) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(client.Config{Nodes: []string{n.Addr()}, TLS: &tls.Config{RootCAs: ca.Pool()}, Token: tc.token, CallTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err = tc.call(ctx, c)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("err %v, want success", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("err %v, want %v", err, tc.want)
			case errors.Is(err, client.ErrUnavailable):
				t.Fatalf("err %v also matches ErrUnavailable", err)
			}
			// The sentinel's words once, not "unauthenticated: unauthenticated:".
			if tc.want != nil {
				word := strings.TrimPrefix(tc.want.Error(), "kvcache: ")
				if c := strings.Count(err.Error(), word); c != 1 {
					t.Errorf("err %q says %q %d times, want once", err, word, c)
				}
			}
		})
	}
}
