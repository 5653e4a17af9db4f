package auth

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// TLSFiles is a server's certificate, key and (for mTLS) client CA
// bundle, read again by Reload so certificates rotate without a restart.
// Connections made before a reload keep the certificate they began with.
type TLSFiles struct {
	CertFile, KeyFile string
	// ClientCAFile, when set, makes client certificates required and
	// verified against it.
	ClientCAFile string

	mu  sync.Mutex
	raw [3][]byte
	cur atomic.Pointer[tls.Config]
}

// LoadTLS reads the files; clientCAFile "" means no client certificates.
func LoadTLS(certFile, keyFile, clientCAFile string) (*TLSFiles, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("auth: TLS needs both a certificate and a key file")
	}
	f := &TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCAFile}
	if _, err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload re-reads the files and reports whether any changed. On error the
// previous certificate stays in use.
func (f *TLSFiles) Reload() (changed bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var raw [3][]byte
	for i, p := range []string{f.CertFile, f.KeyFile, f.ClientCAFile} {
		if p == "" {
			continue
		}
		if raw[i], err = os.ReadFile(p); err != nil {
			return false, fmt.Errorf("auth: TLS: %w", err)
		}
	}
	if f.cur.Load() != nil && bytes.Equal(raw[0], f.raw[0]) && bytes.Equal(raw[1], f.raw[1]) && bytes.Equal(raw[2], f.raw[2]) {
		return false, nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("auth: TLS key pair %s, %s: %w", f.CertFile, f.KeyFile, err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCAFile != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			return false, fmt.Errorf("auth: TLS client CA %s: no PEM certificate", f.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	f.raw = raw
	f.cur.Store(cfg)
	return true, nil
}

// MutualTLS reports whether client certificates are required.
func (f *TLSFiles) MutualTLS() bool { return f != nil && f.ClientCAFile != "" }

// Config returns a server config that uses the files' current content for
// every new connection. nextProtos are the ALPN protocols of the listener
// ("h2" for gRPC, "h2","http/1.1" for HTTP, none for the data plane).
func (f *TLSFiles) Config(nextProtos ...string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := f.cur.Load().Clone()
			c.NextProtos = nextProtos
			return c, nil
		},
	}
}
