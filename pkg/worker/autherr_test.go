package worker

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/auth/authtest"
	"github.com/kvcache/kvcache/pkg/client"
)

// lockedBuffer is a bytes.Buffer safe for a logger and a test at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestCacheCredentialsRefusedAreLoggedAsSuch: a worker whose cache token
// the node does not know still answers (a full prefill), and its log says
// the credentials were refused, at error level, not that a node failed.
func TestCacheCredentialsRefusedAreLoggedAsSuch(t *testing.T) {
	ca := authtest.NewCA(t, "worker auth CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte("known-0123456789abcdef acme write\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{NoSync: true, Security: cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf}})
	c, err := client.New(client.Config{Nodes: []string{n.Addr()}, TLS: &tls.Config{RootCAs: ca.Pool()},
		Token: "unknown-0123456789abcdef", Logger: quietLogger(), CallTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var logs lockedBuffer
	w := newWorker(t, Config{Cache: c, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	res, _ := run(t, w, Request{Prompt: textPrompt(5, 40), MaxTokens: 2})
	if res.CachedTokens != 0 || res.Timings.PrefillTokens != 40 {
		t.Fatalf("cached %d, prefilled %d: want a full prefill", res.CachedTokens, res.Timings.PrefillTokens)
	}
	flush(t, w)
	var refused []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "refused the worker's credentials") {
			refused = append(refused, line)
		}
	}
	if len(refused) == 0 {
		t.Fatalf("no log line says the credentials were refused:\n%s", logs.String())
	}
	for _, l := range refused {
		if !strings.Contains(l, `"level":"ERROR"`) || !strings.Contains(l, "kvcache: unauthenticated") {
			t.Errorf("log line %s: want level ERROR naming kvcache: unauthenticated", l)
		}
	}
}
