package auth

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
)

// Verifier identifies callers for every listener of a node, so gRPC, the
// data plane and metrics apply one policy:
//
//   - A bearer token, when sent, must be in Tokens (and is what counts,
//     even over mTLS).
//   - Otherwise a verified client certificate identifies the caller:
//     through its cert:ID line in Tokens when the node has a tokens file,
//     else as tenant ID with role write.
//   - A node with neither Tokens nor ClientCerts is open: every caller is
//     an admin of the shared tenant, but unless Insecure only loopback
//     callers are served (protected mode).
type Verifier struct {
	// Tokens is the tokens file; nil means the node takes no tokens.
	Tokens *Tokens
	// ClientCerts: the TLS layer requires and verifies client
	// certificates (--tls-client-ca).
	ClientCerts bool
	// Insecure serves callers from any address without credentials.
	Insecure bool
}

// Open reports whether the node authenticates no one.
func (v *Verifier) Open() bool { return v == nil || v.Tokens == nil && !v.ClientCerts }

// ProtectedMessage is the refusal a non-loopback caller of a node in
// protected mode receives.
const ProtectedMessage = "protected mode: this node has no credentials configured and serves loopback clients only; " +
	"start it with --auth-tokens FILE (and send a token) or --tls-client-ca FILE (mTLS) to authenticate clients, " +
	"or with --insecure to serve every address unauthenticated (docs/security.md)"

// Identify returns the identity of a caller from remote that sent token
// (hasToken false: none sent) and whose verified client certificate is
// cert (nil: none). Errors wrap ErrUnauthenticated or ErrPermission.
func (v *Verifier) Identify(token string, hasToken bool, cert *x509.Certificate, remote net.Addr) (Identity, error) {
	if v.Open() {
		switch {
		case hasToken:
			return Identity{}, fmt.Errorf("%w: this node authenticates no tokens (started without --auth-tokens); do not send one", ErrUnauthenticated)
		case v != nil && v.Insecure:
			return Identity{Role: RoleAdmin, Source: "insecure"}, nil
		case !IsLoopback(remote):
			return Identity{}, fmt.Errorf("%w: %s", ErrPermission, ProtectedMessage)
		}
		return Identity{Role: RoleAdmin, Source: "loopback"}, nil
	}
	if hasToken {
		if v.Tokens == nil {
			return Identity{}, fmt.Errorf("%w: this node takes client certificates, not tokens", ErrUnauthenticated)
		}
		id, ok := v.Tokens.Lookup(token)
		if !ok {
			return Identity{}, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
		}
		return id, nil
	}
	if cert != nil && v.ClientCerts {
		cid := CertIdentity(cert)
		if cid == "" || len(cid) > MaxTenantLen {
			return Identity{}, fmt.Errorf("%w: client certificate identity %q: want a URI SAN or common name of 1 to %d bytes", ErrUnauthenticated, cid, MaxTenantLen)
		}
		if v.Tokens == nil {
			return Identity{Tenant: cid, Role: RoleWrite, Source: CertPrefix + cid}, nil
		}
		if id, ok := v.Tokens.LookupCert(cid); ok {
			return id, nil
		}
		return Identity{}, fmt.Errorf("%w: certificate %q has no %s line in the tokens file", ErrUnauthenticated, cid, CertPrefix+cid)
	}
	return Identity{}, fmt.Errorf("%w: missing credential: send \"authorization: Bearer TOKEN\"", ErrUnauthenticated)
}

// CertIdentity is the identity of a client certificate: its first URI SAN
// (e.g. a SPIFFE ID), else its subject common name.
func CertIdentity(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.CommonName
}

// IsLoopback reports whether a is a loopback address or a Unix socket.
func IsLoopback(a net.Addr) bool {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, ok := netip.AddrFromSlice(a.IP)
		return ok && ip.Unmap().IsLoopback()
	case *net.UnixAddr:
		return true
	case nil:
		return false
	}
	ap, err := netip.ParseAddrPort(a.String())
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
