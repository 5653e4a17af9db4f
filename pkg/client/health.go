package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"
)

// HealthConfig tunes active health checking and slow start. Zero values
// mean the defaults in brackets.
type HealthConfig struct {
	// Interval between checks of every member [1s]. Negative disables
	// active checks: every member then stays Healthy and only the
	// per-call fallback to the next replica protects reads.
	Interval time.Duration
	// Timeout of one check [min(Interval, 1s)].
	Timeout time.Duration
	// EjectAfter consecutive failed checks take a member out of placement
	// [3]. The first failure (or a failed call) already makes it Suspect,
	// which moves it to the back of read order.
	EjectAfter int
	// ReadmitAfter consecutive successful checks bring an ejected member
	// back [2].
	ReadmitAfter int
	// WarmUp is the slow-start window of a member that joins a running
	// cluster or is re-admitted: its share of reads ramps linearly from 0
	// to 1 over it [15s]. Negative disables slow start.
	WarmUp time.Duration
	// Service is the gRPC health service name checked
	// ["kvcache.v1.KVCacheService"]. A node without the health service
	// (Unimplemented) counts as healthy when it answers.
	Service string
}

func (h *HealthConfig) defaults() {
	if h.Interval == 0 {
		h.Interval = time.Second
	}
	if h.Timeout <= 0 {
		h.Timeout = min(max(h.Interval, 0), time.Second)
		if h.Timeout == 0 {
			h.Timeout = time.Second
		}
	}
	if h.EjectAfter <= 0 {
		h.EjectAfter = 3
	}
	if h.ReadmitAfter <= 0 {
		h.ReadmitAfter = 2
	}
	if h.WarmUp == 0 {
		h.WarmUp = 15 * time.Second
	}
	if h.Service == "" {
		h.Service = kvcachev1.KVCacheService_ServiceDesc.ServiceName
	}
}

// errNotServing is a check answered NOT_SERVING (a node shutting down).
var errNotServing = errors.New("not serving")

// healthCheck returns the check membership runs: it asks a node's gRPC
// health service for service, over the node's first connection.
func healthCheck(ps *peers, service string) func(ctx context.Context, addr string) error {
	return func(ctx context.Context, addr string) error {
		n, err := ps.get(addr)
		if err != nil {
			return err
		}
		resp, err := healthpb.NewHealthClient(n.conns[0]).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if status.Code(err) == codes.Unimplemented {
			return nil // alive, just without the health service
		}
		if err != nil {
			return wrapRPC(addr, err)
		}
		if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("node %s: %w: %w (%s)", addr, ErrUnavailable, errNotServing, s)
		}
		return nil
	}
}

// checkAll checks every member in parallel and applies the results.
func (m *membership) checkAll(ctx context.Context) {
	addrs := m.addrs()
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx, cancel := context.WithTimeout(ctx, m.hc.Timeout)
			errs[i] = m.check(cctx, a)
			cancel()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // closing: a cancelled check says nothing about the node
	}
	changed := false
	m.mu.Lock()
	now := time.Now()
	for i, a := range addrs {
		if mb := m.members[a]; mb != nil && m.apply(mb, errs[i], now) {
			changed = true
		}
	}
	m.mu.Unlock()
	if changed {
		m.publish()
	}
}

// apply moves a member through its states after one check; it reports
// whether placement changed. Called with m.mu held.
func (m *membership) apply(mb *member, err error, now time.Time) bool {
	mb.lastCheck = now
	prev := mb.state
	if err != nil {
		mb.fails++
		mb.oks = 0
		mb.lastErr = err.Error()
		if mb.fails >= m.hc.EjectAfter {
			m.setState(mb, Ejected, now)
		} else if mb.state != Ejected {
			m.setState(mb, Suspect, now)
		}
	} else {
		mb.oks++
		mb.fails = 0
		mb.lastErr = ""
		switch mb.state {
		case Ejected:
			if mb.oks >= m.hc.ReadmitAfter {
				mb.warmFrom = now
				m.setState(mb, Warming, now)
			}
		case Suspect:
			m.setState(mb, Warming, now) // settles below
		}
		if mb.state == Warming && warmth(mb.warmFrom, m.hc.WarmUp, now) >= 1 {
			mb.warmFrom = time.Time{}
			m.setState(mb, Healthy, now)
		}
	}
	if mb.state != prev {
		m.log.Info("cache node health changed", "node", mb.addr, "from", prev, "to", mb.state, "err", mb.lastErr)
		return true
	}
	return false
}

func (m *membership) setState(mb *member, s State, now time.Time) {
	if mb.state != s {
		mb.state, mb.since = s, now
	}
}

// suspect demotes a member after a failed call (passive health), so the
// next reads try the other replica first instead of waiting on it again.
// Only active checks eject or restore it.
func (m *membership) suspect(addr string, err error) {
	if m.hc.Interval < 0 {
		return // nothing would ever clear the mark
	}
	m.mu.Lock()
	mb := m.members[addr]
	changed := mb != nil && (mb.state == Healthy || mb.state == Warming)
	if changed {
		mb.lastErr = err.Error()
		m.setState(mb, Suspect, time.Now())
	}
	m.mu.Unlock()
	if changed {
		m.log.Info("cache node suspect after a failed call", "node", addr, "err", err)
		m.publish()
	}
}
