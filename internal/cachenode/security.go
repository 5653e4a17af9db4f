package cachenode

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/server"
)

// Security is a node's TLS and authentication configuration
// (docs/security.md). The zero value is protected mode: plain TCP,
// loopback callers only.
type Security struct {
	// TLSCert and TLSKey are PEM files; both set turns TLS on for gRPC, the
	// data plane and metrics. They are read again on Reload and when they
	// change.
	TLSCert, TLSKey string
	// TLSClientCA, a PEM bundle, makes client certificates required and
	// verified on every listener (mTLS); it needs TLSCert.
	TLSClientCA string
	// AuthTokens is the tokens file (auth.Tokens); "" means none.
	AuthTokens string
	// Insecure serves callers from any address when the node has neither
	// AuthTokens nor TLSClientCA.
	Insecure bool
	// TenantQuota bounds the bytes of each named tenant; a quota column in
	// the tokens file is used for tenants not named here.
	TenantQuota map[string]int64
}

// security is the loaded form of Security.
type security struct {
	tls    *auth.TLSFiles // nil without TLS
	tokens *auth.Tokens   // nil without a tokens file
	v      *auth.Verifier
}

func loadSecurity(s Security) (*security, error) {
	out := &security{}
	var err error
	switch {
	case s.TLSCert != "" || s.TLSKey != "":
		if out.tls, err = auth.LoadTLS(s.TLSCert, s.TLSKey, s.TLSClientCA); err != nil {
			return nil, fmt.Errorf("cachenode: %w", err)
		}
	case s.TLSClientCA != "":
		return nil, errors.New("cachenode: --tls-client-ca needs --tls-cert and --tls-key")
	}
	if s.AuthTokens != "" {
		if out.tokens, err = auth.LoadTokens(s.AuthTokens); err != nil {
			return nil, fmt.Errorf("cachenode: %w", err)
		}
	}
	out.v = &auth.Verifier{Tokens: out.tokens, ClientCerts: out.tls.MutualTLS(), Insecure: s.Insecure}
	return out, nil
}

// reloaders are the files Reload and the watcher read again.
func (s *security) reloaders() []auth.Reloader {
	var rs []auth.Reloader
	if s.tls != nil {
		rs = append(rs, s.tls)
	}
	if s.tokens != nil {
		rs = append(rs, s.tokens)
	}
	return rs
}

// mode names the security mode for the start-up log.
func (s *security) mode() string {
	var parts []string
	if s.tls != nil {
		parts = append(parts, "tls")
	}
	if s.tls.MutualTLS() {
		parts = append(parts, "mtls")
	}
	if s.tokens != nil {
		parts = append(parts, "tokens")
	}
	switch {
	case !s.v.Open():
	case s.v.Insecure:
		parts = append(parts, "insecure")
	default:
		parts = append(parts, "protected (loopback only)")
	}
	return strings.Join(parts, "+")
}

// grpcOptions are the server options for TLS and authentication.
func (s *security) grpcOptions() []grpc.ServerOption {
	var opts []grpc.ServerOption
	if s.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.tls.Config("h2"))))
	}
	return opts
}

// interceptors authenticate every call; they go first in the chain.
func (s *security) interceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	return server.AuthInterceptors(s.v)
}

// wrapListener adds TLS to a plain listener (the data plane, metrics).
func (s *security) wrapListener(l net.Listener, nextProtos ...string) net.Listener {
	if s.tls == nil {
		return l
	}
	return tls.NewListener(l, s.tls.Config(nextProtos...))
}

// metricsHandler guards /metrics: node-wide counters are for admins (a
// bearer token of role admin, or an admin certificate); in protected mode
// loopback only. /healthz stays open for probes.
func (s *security) metricsHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, hasToken := "", false
		if a := r.Header.Get("Authorization"); a != "" {
			scheme, tok, ok := strings.Cut(a, " ")
			if !ok || !strings.EqualFold(scheme, "bearer") {
				http.Error(w, `Authorization must be "Bearer TOKEN"`, http.StatusUnauthorized)
				return
			}
			token, hasToken = strings.TrimSpace(tok), true
		}
		var remote net.Addr
		if ap, err := net.ResolveTCPAddr("tcp", r.RemoteAddr); err == nil {
			remote = ap
		}
		id, err := s.v.Identify(token, hasToken, peerCert(r.TLS), remote)
		if err == nil {
			err = id.Require(auth.RoleAdmin)
		}
		switch {
		case errors.Is(err, auth.ErrUnauthenticated):
			w.Header().Set("WWW-Authenticate", `Bearer realm="kvcache"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case err != nil:
			http.Error(w, err.Error(), http.StatusForbidden)
		default:
			h.ServeHTTP(w, r)
		}
	})
}

func peerCert(st *tls.ConnectionState) *x509.Certificate {
	if st == nil || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}

// quotas is the store's per-tenant budget: the tokens file's quota
// column (the largest among a tenant's lines), overridden by
// --tenant-quota. The store reads it at start: a changed quota takes a
// restart (docs/security.md).
func (s *security) quotas(flags map[string]int64) map[string]int64 {
	q := map[string]int64{}
	if s.tokens != nil {
		maps.Copy(q, s.tokens.Quotas())
	}
	maps.Copy(q, flags)
	return q
}

// quotaOf is the quota the node enforces for tenant (0: none).
func (n *Node) quotaOf(tenant string) int64 { return n.quotas[tenant] }

// tenantBytes is what tenant holds, from the store's accounting.
func (n *Node) tenantBytes(tenant string) (int64, int64) {
	ts := n.st.Stats().Tenants[tenant]
	return ts.BytesUsed, ts.Blocks
}

// Reload reads the TLS files and the tokens file again (the command calls
// it on SIGHUP; the node also polls them every ReloadInterval).
func (n *Node) Reload() error {
	var errs []error
	for _, r := range n.sec.reloaders() {
		if _, err := r.Reload(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// HostPort returns listen's host with port: the default address of the
// data plane and metrics, so a node told to listen on one interface does
// not serve its data from all of them.
func HostPort(listen, port string) string {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = ""
	}
	return net.JoinHostPort(host, port)
}

// Default port offsets from --listen's port (as Redis puts its cluster
// bus at port+10000): the defaults 7070, 7071 and 9090, and a second node
// on --listen :7080 gets 7081 and 9100 instead of colliding with the first.
const (
	DataPortOffset    = 1
	MetricsPortOffset = 2020
)

// DerivedAddr is the default address of a listener beside listen's:
// listen's host, and its port plus offset. Port 0 (any free port) stays 0;
// a port that is not a number, or would pass 65535, gives fallback.
func DerivedAddr(listen string, offset int, fallback string) string {
	_, p, err := net.SplitHostPort(listen)
	port, perr := strconv.Atoi(p)
	switch {
	case err != nil || perr != nil || port < 0 || port+offset > 65535:
		return HostPort(listen, fallback)
	case port == 0:
		return HostPort(listen, "0")
	}
	return HostPort(listen, strconv.Itoa(port+offset))
}
