package cachenode_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/auth/authtest"
)

// TestQuotaEvictsOnlyTheTenantsOwnBlocks: tenant A filling its quota
// evicts its own least recently used blocks, never B's; a block A cannot
// fit at all is ResourceExhausted.
func TestQuotaEvictsOnlyTheTenantsOwnBlocks(t *testing.T) {
	ca := authtest.NewCA(t, "quota CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	blockLen := int64(len(newChain(t, 1, 1).blocks[0]))
	if err := os.WriteFile(tf, []byte(tokAWrite+" A write\n"+tokBWrite+" B write\n"+tokAdmin+" - admin\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{
		Security: cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf,
			TenantQuota: map[string]int64{"A": 3 * blockLen, "B": blockLen / 2}},
	})
	sn := &secureNode{Node: n, ca: ca, tokens: tf, tls: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}
	cl := sn.client(t)
	ctx := ctxT(t)

	bChain := newChain(t, 1, 50)
	// B's quota is half a block: nothing of its own to evict.
	out, err := putChain(as(ctx, tokBWrite), cl, bChain)
	if err != nil || len(out) != 1 || out[0] != kvcachev1.PutResult_OUTCOME_REJECTED {
		t.Fatalf("B over its quota with nothing to evict: %v, %v; want REJECTED", out, err)
	}
	// The same block in the shared tenant (no quota) is the bystander
	// A's quota must not touch.
	if out, err := putChain(as(ctx, tokAdmin), cl, bChain); err != nil || out[0] != kvcachev1.PutResult_OUTCOME_STORED {
		t.Fatalf("shared tenant Put: %v %v", out, err)
	}
	// A puts 10 one-block chains; its quota holds 3.
	var aChains []testChain
	for i := range 10 {
		c := newChain(t, 1, float32(100+i))
		aChains = append(aChains, c)
		if out, err := putChain(as(ctx, tokAWrite), cl, c); err != nil || out[0] != kvcachev1.PutResult_OUTCOME_STORED {
			t.Fatalf("A's put %d: %v, %v", i, out, err)
		}
	}
	held := 0
	for i, c := range aChains {
		r, err := cl.Lookup(as(ctx, tokAWrite), &kvcachev1.LookupRequest{Namespace: c.ns[:], Keys: c.keyBytes()})
		if err != nil {
			t.Fatal(err)
		}
		held += int(r.GetPrefixLen())
		if i >= 7 && r.GetPrefixLen() != 1 {
			t.Errorf("A's most recent block %d was evicted", i)
		}
	}
	if held != 3 {
		t.Errorf("A holds %d blocks, quota fits 3", held)
	}
	if r, _ := cl.Lookup(as(ctx, tokAdmin), &kvcachev1.LookupRequest{Namespace: bChain.ns[:], Keys: bChain.keyBytes()}); r.GetPrefixLen() != 1 {
		t.Error("A's quota evicted another tenant's block")
	}
	st, err := cl.Stats(as(ctx, tokAWrite), &kvcachev1.StatsRequest{})
	if err != nil || st.GetBlocks() != 3 || st.GetBytesUsed() > uint64(3*blockLen) || st.GetCapacityBytes() != uint64(3*blockLen) {
		t.Errorf("A's Stats: %+v, %v; want 3 blocks within a capacity of its quota %d", st, err, 3*blockLen)
	}
}

// TestMutualTLS: a client without a certificate and one with a
// certificate of another CA cannot connect; a valid certificate is its
// tenant, on gRPC and on the data plane.
func TestMutualTLS(t *testing.T) {
	ca := authtest.NewCA(t, "mTLS CA")
	other := authtest.NewCA(t, "other CA")
	srv := ca.Server(t)
	n := testnode.Start(t, cachenode.Config{
		DataListen: "127.0.0.1:0",
		Security:   cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, TLSClientCA: ca.File},
	})
	ctx := ctxT(t)
	c := newChain(t, 2, 3)
	for _, tc := range []struct {
		name string
		cert *authtest.Issued
		ok   bool
	}{
		{"no certificate", nil, false},
		{"another CA", other.Client(t, "mallory", ""), false},
		{"valid", ca.Client(t, "worker-a", "spiffe://acme/worker"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}
			if tc.cert != nil {
				cfg.Certificates = []tls.Certificate{tc.cert.TLS}
			}
			cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			cl := kvcachev1.NewKVCacheServiceClient(cc)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			_, err = putChain(cctx, cl, c)
			_, derr := dataGet(cctx, n.DataAddr(), cfg, "", c)
			if !tc.ok {
				if status.Code(err) != codes.Unavailable || derr == nil {
					t.Fatalf("gRPC %v, data plane %v; want both refused at the handshake", err, derr)
				}
				return
			}
			if err != nil || derr != nil {
				t.Fatalf("valid certificate: gRPC %v, data plane %v", err, derr)
			}
			b, err := getChain(cctx, cl, c)
			if err != nil || found(b) != 2 {
				t.Fatalf("own blocks: %d, %v", found(b), err)
			}
			st, _ := cl.Stats(cctx, &kvcachev1.StatsRequest{})
			if st.GetPuts() != 2 {
				t.Errorf("tenant Stats %+v; want the certificate's own 2 puts", st)
			}
			// A certificate without a tokens-file line has role write.
			_, err = cl.Delete(cctx, &kvcachev1.DeleteRequest{Namespace: c.ns[:], Keys: c.keyBytes()})
			wantCode(t, "Delete by a certificate identity", err, codes.PermissionDenied)
		})
	}
}

// TestMetricsTLSAndAuth: /metrics over TLS takes an admin token; /healthz
// is open for probes.
func TestMetricsTLSAndAuth(t *testing.T) {
	sn := startSecureMetrics(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: sn.tls}, Timeout: 5 * time.Second}
	get := func(path, token string) int {
		req, _ := http.NewRequest("GET", "https://"+sn.MetricsAddr()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/healthz", "", 200},
		{"/metrics", "", 401},
		{"/metrics", "wrong-0123456789abcdef", 401},
		{"/metrics", tokAWrite, 403},
		{"/metrics", tokAdmin, 200},
	} {
		if got := get(tc.path, tc.token); got != tc.want {
			t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.token, got, tc.want)
		}
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + sn.MetricsAddr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("metrics listener answered plain HTTP with TLS configured")
		}
	}
}

func startSecureMetrics(t *testing.T) *secureNode {
	t.Helper()
	ca := authtest.NewCA(t, "metrics CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte(tokensFile), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{
		MetricsListen: "127.0.0.1:0",
		Security:      cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf},
	})
	return &secureNode{Node: n, ca: ca, tokens: tf, tls: &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost"}}
}

// TestCertificateRotation: a rewritten certificate file is served to new
// connections without a restart.
func TestCertificateRotation(t *testing.T) {
	ca := authtest.NewCA(t, "rotation CA")
	srv := ca.Server(t)
	n := testnode.Start(t, cachenode.Config{
		ReloadInterval: 20 * time.Millisecond,
		Security:       cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, Insecure: true},
	})
	serial := func() string {
		conn, err := tls.Dial("tcp", n.Addr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial()
	next := ca.Server(t)
	for _, f := range [][2]string{{next.KeyFile, srv.KeyFile}, {next.CertFile, srv.CertFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for serial() == first {
		if time.Now().After(deadline) {
			t.Fatal("node still serves the old certificate 10s after the files changed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := n.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
}
