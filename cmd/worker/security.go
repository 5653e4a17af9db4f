package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/worker"
)

// security is the worker's TLS and API-key configuration
// (docs/security.md, "The worker").
type security struct {
	tlsCert, tlsKey, tlsClientCA string
	apiKeys                      string
	tls                          *auth.TLSFiles

	cacheToken, cacheTokenFile            string
	cacheTLSCA, cacheTLSCert, cacheTLSKey string
}

func (s *security) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate: serve the HTTP API over TLS (reloaded on change and SIGHUP)")
	fs.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&s.tlsClientCA, "tls-client-ca", "", "PEM CA bundle: require and verify client certificates on the HTTP API")
	fs.StringVar(&s.apiKeys, "api-keys", "", "API keys file, lines of KEY TENANT; callers send Authorization: Bearer KEY (reloaded on change and SIGHUP)")
	fs.StringVar(&s.cacheToken, "cache-token", "", "token sent to the cache nodes (default $KVCACHE_TOKEN)")
	fs.StringVar(&s.cacheTokenFile, "cache-token-file", "", "file holding the token sent to the cache nodes (a compose or Kubernetes secret)")
	fs.StringVar(&s.cacheTLSCA, "cache-tls-ca", "", "PEM CA bundle that signed the cache nodes' certificates: TLS to the cache")
	fs.StringVar(&s.cacheTLSCert, "cache-tls-cert", "", "PEM client certificate for the cache nodes (mTLS)")
	fs.StringVar(&s.cacheTLSKey, "cache-tls-key", "", "PEM private key of --cache-tls-cert")
}

// cacheClient sets the client's TLS and token from the flags.
func (s *security) cacheClient(cfg *client.Config) error {
	tok := s.cacheToken
	switch {
	case tok != "" && s.cacheTokenFile != "":
		return errors.New("--cache-token and --cache-token-file are exclusive")
	case s.cacheTokenFile != "":
		b, err := os.ReadFile(s.cacheTokenFile)
		if err != nil {
			return fmt.Errorf("--cache-token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	case tok == "":
		tok = os.Getenv("KVCACHE_TOKEN")
	}
	cfg.Token = tok
	tc, err := auth.ClientTLS(s.cacheTLSCA, s.cacheTLSCert, s.cacheTLSKey)
	if err != nil {
		return fmt.Errorf("cache TLS: %w", err)
	}
	cfg.TLS = tc
	return nil
}

// keysReloader adapts worker.APIKeys to auth.Reloader.
type keysReloader struct{ k *worker.APIKeys }

func (r keysReloader) Reload() (bool, error) { return true, r.k.Reload() }

// handler loads the files, wraps h with the API-key check, and reloads the
// files on SIGHUP and every 2 s until ctx ends.
func (s *security) handler(ctx context.Context, h http.Handler, log *slog.Logger) (http.Handler, error) {
	var rs []auth.Reloader
	if s.tlsCert != "" || s.tlsKey != "" || s.tlsClientCA != "" {
		f, err := auth.LoadTLS(s.tlsCert, s.tlsKey, s.tlsClientCA)
		if err != nil {
			return nil, err
		}
		s.tls = f
		rs = append(rs, f)
	}
	if s.apiKeys != "" {
		k, err := worker.LoadAPIKeys(s.apiKeys)
		if err != nil {
			return nil, err
		}
		h = worker.RequireAPIKeys(k, h)
		rs = append(rs, keysReloader{k})
	}
	if len(rs) == 0 {
		return h, nil
	}
	report := func(_ auth.Reloader, err error) {
		if err != nil {
			log.Error("reload failed; previous keys and certificates stay in force", "err", err)
		}
	}
	go auth.Watch(ctx, 2*time.Second, report, rs...)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for {
			select {
			case <-ctx.Done():
				signal.Stop(hup)
				return
			case <-hup:
				for _, r := range rs {
					_, err := r.Reload()
					report(r, err)
				}
				log.Info("SIGHUP: API keys and certificates reloaded")
			}
		}
	}()
	return h, nil
}

// listener adds TLS to the HTTP listener when configured.
func (s *security) listener(l net.Listener) net.Listener {
	if s.tls == nil {
		return l
	}
	return tls.NewListener(l, s.tls.Config("h2", "http/1.1"))
}
