package worker

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// namespaceFor is the cache namespace of a request with isolation iso
// (Request.Isolation).
func (w *Worker) namespaceFor(iso string) prefix.Namespace {
	return prefix.WithTenant(w.ns, iso)
}

// Isolation is the Request.Isolation of a request by an API key of tenant
// with cache_salt salt (docs/keys.md, "Request salt"): "" when both are
// empty, else tenant, a newline, and salt. Tenant names hold no
// whitespace, so distinct pairs give distinct strings.
func Isolation(tenant, salt string) string {
	if tenant == "" && salt == "" {
		return ""
	}
	return tenant + "\n" + salt
}

// MaxCacheSaltBytes bounds a request's cache_salt.
const MaxCacheSaltBytes = 1024

// APIKeys is a worker's --api-keys file: lines "KEY TENANT", '#'
// comments. Keys are compared in constant time (SHA-256 digests, every
// line). Reload re-reads the file; a file that fails to parse leaves the
// previous keys in force. Safe for concurrent use.
type APIKeys struct {
	path string
	cur  atomic.Pointer[[]apiKey]
}

type apiKey struct {
	sum    [sha256.Size]byte
	tenant string
}

// LoadAPIKeys reads an API keys file.
func LoadAPIKeys(path string) (*APIKeys, error) {
	k := &APIKeys{path: path}
	if err := k.Reload(); err != nil {
		return nil, err
	}
	return k, nil
}

// Reload re-reads the file.
func (k *APIKeys) Reload() error {
	b, err := os.ReadFile(k.path)
	if err != nil {
		return fmt.Errorf("worker: api keys: %w", err)
	}
	var keys []apiKey
	seen := map[[sha256.Size]byte]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case len(f) != 2:
			return fmt.Errorf("worker: api keys %s line %d: %d fields, want KEY TENANT", k.path, n, len(f))
		case len(f[0]) < 16:
			return fmt.Errorf("worker: api keys %s line %d: key of %d characters, at least 16 required", k.path, n, len(f[0]))
		}
		sum := sha256.Sum256([]byte(f[0]))
		if seen[sum] {
			return fmt.Errorf("worker: api keys %s line %d: duplicate key", k.path, n)
		}
		seen[sum] = true
		keys = append(keys, apiKey{sum: sum, tenant: f[1]})
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("worker: api keys %s: %w", k.path, err)
	}
	k.cur.Store(&keys)
	return nil
}

// Tenant returns the tenant of key.
func (k *APIKeys) Tenant(key string) (string, bool) {
	sum := sha256.Sum256([]byte(key))
	var tenant string
	ok := 0
	for _, e := range *k.cur.Load() {
		m := subtle.ConstantTimeCompare(sum[:], e.sum[:])
		if m == 1 {
			tenant = e.tenant
		}
		ok |= m
	}
	return tenant, ok == 1
}

type tenantKey struct{}

// tenantOf is the API-key tenant RequireAPIKeys put in ctx ("" without
// --api-keys).
func tenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// RequireAPIKeys wraps the worker's handler: every request but /healthz
// must carry "Authorization: Bearer KEY" with a key of keys (HTTP 401 with
// an OpenAI error object otherwise), and the key's tenant isolates the
// request's cache namespace.
func RequireAPIKeys(keys *APIKeys, h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			h.ServeHTTP(rw, r)
			return
		}
		scheme, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		tenant, ok := "", false
		if strings.EqualFold(scheme, "bearer") && key != "" {
			tenant, ok = keys.Tenant(strings.TrimSpace(key))
		}
		if !ok {
			code := "invalid_api_key"
			rw.Header().Set("WWW-Authenticate", `Bearer realm="kvcache-worker"`)
			msg := "Incorrect API key provided. Send \"Authorization: Bearer KEY\" with a key of the worker's --api-keys file."
			if r.Header.Get("Authorization") == "" {
				msg = "You didn't provide an API key. Send \"Authorization: Bearer KEY\"."
			}
			writeError(rw, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Message: msg, Code: &code})
			return
		}
		h.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), tenantKey{}, tenant)))
	})
}
