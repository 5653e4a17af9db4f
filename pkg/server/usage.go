package server

import (
	"sync"
	"sync/atomic"
)

// Usage counts what each tenant did on a node, so Stats can show a tenant
// its own counters and nothing that depends on other tenants' traffic.
// The data plane reports into the same Usage (cachenode wires it). Safe
// for concurrent use; one entry per tenant seen.
type Usage struct {
	mu sync.RWMutex
	m  map[string]*TenantUsage
}

// TenantUsage is one tenant's counters since the node started.
type TenantUsage struct {
	Hits, Misses, Puts, PutBytes atomic.Int64
}

// NewUsage returns empty counters.
func NewUsage() *Usage { return &Usage{m: map[string]*TenantUsage{}} }

// Tenant returns the counters of tenant, creating them.
func (u *Usage) Tenant(tenant string) *TenantUsage {
	u.mu.RLock()
	t := u.m[tenant]
	u.mu.RUnlock()
	if t != nil {
		return t
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if t = u.m[tenant]; t == nil {
		t = &TenantUsage{}
		u.m[tenant] = t
	}
	return t
}

// Served records a read: found blocks and missed keys.
func (u *Usage) Served(tenant string, found, missed int) {
	t := u.Tenant(tenant)
	t.Hits.Add(int64(found))
	t.Misses.Add(int64(missed))
}
