package auth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kvcache/kvcache/internal/units"
)

// MinTokenLen is the shortest token a tokens file may hold: tokens are
// bearer secrets, and a short one can be guessed over the network.
const MinTokenLen = 16

// MaxTenantLen is the longest tenant name (the store labels blocks with it).
const MaxTenantLen = 255

// CertPrefix marks a tokens-file line that maps a TLS client certificate's
// identity (CertIdentity) instead of a token: "cert:spiffe://acme/worker
// acme write".
const CertPrefix = "cert:"

// Tokens is a tokens file: one credential per line,
//
//	TOKEN TENANT ROLE [QUOTA]
//
// separated by spaces or tabs; '#' starts a comment; ROLE is read, write or
// admin; TENANT "-" is SharedTenant; QUOTA is a byte size such as 20GiB.
// A TOKEN of the form cert:ID maps a client certificate instead.
//
// Reload and Poll re-read the file; a file that fails to parse leaves the
// previous credentials in force and returns the error, so a bad edit never
// locks everyone out (nor lets anyone in). Safe for concurrent use.
type Tokens struct {
	path string
	mu   sync.Mutex // serialises reloads
	sum  [sha256.Size]byte
	cur  atomic.Pointer[tokenSet]
}

type tokenSet struct {
	tokens []tokenEntry
	certs  map[string]Identity
}

type tokenEntry struct {
	sum [sha256.Size]byte // SHA-256 of the token: compared, never the token
	id  Identity
}

// LoadTokens reads the tokens file at path.
func LoadTokens(path string) (*Tokens, error) {
	t := &Tokens{path: path}
	if _, err := t.Reload(); err != nil {
		return nil, err
	}
	return t, nil
}

// Path is the file's path.
func (t *Tokens) Path() string { return t.path }

// Reload re-reads the file and reports whether its content changed. On
// error the previous credentials stay in force.
func (t *Tokens) Reload() (changed bool, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, err := os.ReadFile(t.path)
	if err != nil {
		return false, fmt.Errorf("auth: tokens file: %w", err)
	}
	sum := sha256.Sum256(b)
	if sum == t.sum && t.cur.Load() != nil {
		return false, nil
	}
	set, err := parseTokens(b)
	if err != nil {
		return false, fmt.Errorf("auth: tokens file %s: %w", t.path, err)
	}
	t.cur.Store(set)
	t.sum = sum
	return true, nil
}

// Len is the number of credentials (tokens and certificate mappings).
func (t *Tokens) Len() int {
	s := t.cur.Load()
	return len(s.tokens) + len(s.certs)
}

// Lookup returns the identity of token. Every entry is compared, in
// constant time, whatever matches: how long it takes says nothing about
// which tokens exist.
func (t *Tokens) Lookup(token string) (Identity, bool) {
	s := t.cur.Load()
	sum := sha256.Sum256([]byte(token))
	var found Identity
	ok := 0
	for i := range s.tokens {
		m := subtle.ConstantTimeCompare(sum[:], s.tokens[i].sum[:])
		if m == 1 {
			found = s.tokens[i].id
		}
		ok |= m
	}
	return found, ok == 1
}

// LookupCert returns the identity a certificate identity is mapped to.
func (t *Tokens) LookupCert(certID string) (Identity, bool) {
	id, ok := t.cur.Load().certs[certID]
	return id, ok
}

// parseTokens parses the content of a tokens file (see Tokens).
func parseTokens(b []byte) (*tokenSet, error) {
	set := &tokenSet{certs: map[string]Identity{}}
	seen := map[[sha256.Size]byte]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<10)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) < 3 || len(f) > 4 {
			return nil, fmt.Errorf("line %d: %d fields, want TOKEN TENANT ROLE [QUOTA]", n, len(f))
		}
		role, err := ParseRole(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		if len(f[1]) > MaxTenantLen {
			return nil, fmt.Errorf("line %d: tenant of %d bytes, at most %d", n, len(f[1]), MaxTenantLen)
		}
		id := Identity{Tenant: f[1], Role: role, Source: "token"}
		if id.Tenant == SharedTenant {
			// A caller whose namespaces are not folded can send any
			// tenant's folded namespace (it is a public function of the
			// model and the tenant name): only an admin may.
			if role != RoleAdmin {
				return nil, fmt.Errorf("line %d: the shared tenant %q is for role admin only (it can address every tenant's blocks)", n, SharedTenant)
			}
			id.Tenant = ""
		}
		if len(f) == 4 {
			q, err := units.ParseBytes(f[3])
			if err != nil || q <= 0 {
				return nil, fmt.Errorf("line %d: quota %q: want a positive byte size such as 20GiB", n, f[3])
			}
			id.Quota = q
		}
		if cid, ok := strings.CutPrefix(f[0], CertPrefix); ok {
			if cid == "" {
				return nil, fmt.Errorf("line %d: empty certificate identity", n)
			}
			if _, dup := set.certs[cid]; dup {
				return nil, fmt.Errorf("line %d: certificate %q mapped twice", n, cid)
			}
			id.Source = f[0]
			set.certs[cid] = id
			continue
		}
		if len(f[0]) < MinTokenLen {
			return nil, fmt.Errorf("line %d: token of %d characters, at least %d required", n, len(f[0]), MinTokenLen)
		}
		sum := sha256.Sum256([]byte(f[0]))
		if prev, dup := seen[sum]; dup {
			return nil, fmt.Errorf("line %d: same token as line %d", n, prev)
		}
		seen[sum] = n
		set.tokens = append(set.tokens, tokenEntry{sum: sum, id: id})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return set, nil
}

// Quotas is the largest quota column of each tenant that has one.
func (t *Tokens) Quotas() map[string]int64 {
	s := t.cur.Load()
	q := map[string]int64{}
	add := func(id Identity) {
		if id.Quota > 0 {
			q[id.Tenant] = max(q[id.Tenant], id.Quota)
		}
	}
	for _, e := range s.tokens {
		add(e.id)
	}
	for _, id := range s.certs {
		add(id)
	}
	return q
}
