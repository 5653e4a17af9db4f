package kvctl

import (
	"crypto/tls"
	"fmt"

	"github.com/spf13/pflag"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvcache/kvcache/pkg/auth"
)

// securityFlags are the global TLS and token flags (docs/security.md);
// like every global flag they also come from KVCACHE_TLS_CA,
// KVCACHE_TLS_CERT, KVCACHE_TLS_KEY and KVCACHE_TOKEN.
type securityFlags struct {
	tlsCA, tlsCert, tlsKey string
	token                  string
}

func (s *securityFlags) register(pf *pflag.FlagSet) {
	pf.StringVar(&s.tlsCA, "tls-ca", "", "PEM CA bundle of the nodes' certificates: connect with TLS")
	pf.StringVar(&s.tlsCert, "tls-cert", "", "PEM client certificate (mTLS)")
	pf.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	pf.StringVar(&s.token, "token", "", "bearer token for the nodes (a line of their --auth-tokens file)")
}

// tls is the client TLS config, nil without TLS flags.
func (s *securityFlags) tls() (*tls.Config, error) {
	c, err := auth.ClientTLS(s.tlsCA, s.tlsCert, s.tlsKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return c, nil
}

// grpcCreds are the transport credentials of a direct gRPC connection.
func (s *securityFlags) grpcCreds() (credentials.TransportCredentials, error) {
	c, err := s.tls()
	if err != nil || c == nil {
		return insecure.NewCredentials(), err
	}
	return credentials.NewTLS(c), nil
}
