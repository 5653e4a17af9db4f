package auth_test

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/auth"
)

const (
	tokA = "tok-a-0123456789abcdef"
	tokB = "tok-b-0123456789abcdef"
)

func writeTokens(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, content, want string }{
		{"fields", tokA + " acme\n", "2 fields"},
		{"role", tokA + " acme root\n", "unknown role"},
		{"short", "short acme read\n", "at least 16"},
		{"dup", tokA + " a read\n" + tokA + " b read\n", "same token as line 1"},
		{"quota", tokA + " a read lots\n", "quota"},
		{"certdup", "cert:x a read\ncert:x b read\n", "mapped twice"},
		{"shared non-admin", tokA + " - write\n", "admin only"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "tokens")
			writeTokens(t, p, tc.content)
			_, err := auth.LoadTokens(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want it to say %q", err, tc.want)
			}
		})
	}
}

func TestTokensLookupAndReload(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, p, "# comment\n"+tokA+"\tacme write 1GiB # trailing\n\n"+tokB+" - admin\ncert:spiffe://x/w acme read\n")
	tk, err := auth.LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	if tk.Len() != 3 {
		t.Fatalf("Len %d, want 3", tk.Len())
	}
	id, ok := tk.Lookup(tokA)
	if !ok || id.Tenant != "acme" || id.Role != auth.RoleWrite || id.Quota != 1<<30 {
		t.Fatalf("tokA: %+v %v", id, ok)
	}
	if id, ok := tk.Lookup(tokB); !ok || id.Tenant != "" || id.Role != auth.RoleAdmin {
		t.Fatalf("tokB: %+v %v", id, ok)
	}
	if _, ok := tk.Lookup(tokA + "x"); ok {
		t.Fatal("a longer token matched")
	}
	if id, ok := tk.LookupCert("spiffe://x/w"); !ok || id.Role != auth.RoleRead {
		t.Fatalf("cert: %+v %v", id, ok)
	}

	// A bad edit keeps the old credentials; a good one replaces them.
	writeTokens(t, p, tokA+" acme\n")
	if _, err := tk.Reload(); err == nil {
		t.Fatal("bad file reloaded")
	}
	if _, ok := tk.Lookup(tokA); !ok {
		t.Fatal("bad edit revoked tokA")
	}
	writeTokens(t, p, tokB+" acme read\n")
	if changed, err := tk.Reload(); err != nil || !changed {
		t.Fatalf("reload: %v %v", changed, err)
	}
	if _, ok := tk.Lookup(tokA); ok {
		t.Fatal("revoked token still accepted")
	}
	if changed, _ := tk.Reload(); changed {
		t.Fatal("unchanged file reported as changed")
	}
}

func TestVerifier(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tokens")
	writeTokens(t, p, tokA+" acme write\ncert:spiffe://acme/w acme read\n")
	tk, err := auth.LoadTokens(p)
	if err != nil {
		t.Fatal(err)
	}
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}
	lo6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 1}
	far := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 1}
	u, _ := url.Parse("spiffe://acme/w")
	mapped := &x509.Certificate{URIs: []*url.URL{u}, Subject: pkix.Name{CommonName: "ignored"}}
	unmapped := &x509.Certificate{Subject: pkix.Name{CommonName: "bob"}}

	for _, tc := range []struct {
		name   string
		v      *auth.Verifier
		token  string
		cert   *x509.Certificate
		remote net.Addr
		want   error
		tenant string
		role   auth.Role
	}{
		{"protected loopback", &auth.Verifier{}, "", nil, lo, nil, "", auth.RoleAdmin},
		{"protected loopback6", &auth.Verifier{}, "", nil, lo6, nil, "", auth.RoleAdmin},
		{"protected remote", &auth.Verifier{}, "", nil, far, auth.ErrPermission, "", 0},
		{"insecure remote", &auth.Verifier{Insecure: true}, "", nil, far, nil, "", auth.RoleAdmin},
		{"open node, token sent", &auth.Verifier{}, tokA, nil, lo, auth.ErrUnauthenticated, "", 0},
		{"token", &auth.Verifier{Tokens: tk}, tokA, nil, far, nil, "acme", auth.RoleWrite},
		{"wrong token", &auth.Verifier{Tokens: tk}, tokB, nil, lo, auth.ErrUnauthenticated, "", 0},
		{"no credential", &auth.Verifier{Tokens: tk}, "", nil, lo, auth.ErrUnauthenticated, "", 0},
		{"cert mapped", &auth.Verifier{Tokens: tk, ClientCerts: true}, "", mapped, far, nil, "acme", auth.RoleRead},
		{"cert unmapped", &auth.Verifier{Tokens: tk, ClientCerts: true}, "", unmapped, far, auth.ErrUnauthenticated, "", 0},
		{"cert, no tokens file", &auth.Verifier{ClientCerts: true}, "", unmapped, far, nil, "bob", auth.RoleWrite},
		{"token beats cert", &auth.Verifier{Tokens: tk, ClientCerts: true}, tokA, mapped, far, nil, "acme", auth.RoleWrite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Identify(tc.token, tc.token != "", tc.cert, tc.remote)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil || id.Tenant != tc.tenant || id.Role != tc.role {
				t.Fatalf("got %+v, %v; want tenant %q role %v", id, err, tc.tenant, tc.role)
			}
		})
	}
	if _, err := (&auth.Verifier{}).Identify("", false, nil, far); !strings.Contains(err.Error(), "--auth-tokens") {
		t.Fatalf("protected-mode refusal does not say how to enable auth: %v", err)
	}
}

func TestRoleAllows(t *testing.T) {
	id := auth.Identity{Role: auth.RoleWrite}
	if id.Require(auth.RoleRead) != nil || id.Require(auth.RoleWrite) != nil {
		t.Fatal("write lacks read or write")
	}
	if err := id.Require(auth.RoleAdmin); !errors.Is(err, auth.ErrPermission) {
		t.Fatalf("write got admin: %v", err)
	}
}
