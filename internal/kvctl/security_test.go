package kvctl_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/auth/authtest"
)

// TestTLSAndTokenFlags: against a node with TLS and tokens, kvctl works
// with --tls-ca and --token (or KVCACHE_TLS_CA and KVCACHE_TOKEN) and
// fails without the token; probe needs only TLS.
func TestTLSAndTokenFlags(t *testing.T) {
	const tok = "kvctl-admin-0123456789abcdef"
	ca := authtest.NewCA(t, "kvctl CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte(tok+" - admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{Security: cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf}})
	if code, out, errs := cli(t, nil, "stats", "--nodes", n.Addr(), "--tls-ca", ca.File, "--token", tok); code != 0 {
		t.Fatalf("stats with flags: exit %d\n%s%s", code, out, errs)
	}
	env := map[string]string{"KVCACHE_TLS_CA": ca.File, "KVCACHE_TOKEN": tok, "KVCACHE_NODES": n.Addr()}
	if code, out, errs := cli(t, env, "stats"); code != 0 {
		t.Fatalf("stats with KVCACHE_*: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := cli(t, nil, "stats", "--nodes", n.Addr(), "--tls-ca", ca.File)
	if code != 1 || !strings.Contains(out, "kvcache: unauthenticated: ") || !strings.Contains(errs, "refused the credentials") {
		t.Fatalf("stats without a token: exit %d, %q %q; want 1 naming Unauthenticated", code, out, errs)
	}
	code, out, errs = cli(t, nil, "put", "--nodes", n.Addr(), "--tls-ca", ca.File)
	if code != 1 || !strings.Contains(errs, "kvcache: unauthenticated: ") || strings.Contains(errs, "unavailable") {
		t.Fatalf("put without a token: exit %d, %q %q; want 1 naming unauthenticated", code, out, errs)
	}
	if code, out, errs := cli(t, nil, "probe", "--grpc", n.Addr(), "--tls-ca", ca.File); code != 0 {
		t.Fatalf("probe over TLS: exit %d\n%s%s", code, out, errs)
	}
}
