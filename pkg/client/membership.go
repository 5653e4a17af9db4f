package client

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Node entries of Config.Nodes that start with one of these schemes name a
// DNS source instead of a node; the client re-resolves them every
// Config.ResolveInterval.
const (
	// SchemeDNS resolves "dns:///host:port" to one node per A/AAAA record
	// (ip:port). A node's identity is its IP, so a restarted pod with a new
	// IP is a new node to placement.
	SchemeDNS = "dns:///"
	// SchemeDNSSRV resolves "dnssrv:///_grpc._tcp.name" to one node per SRV
	// record (target:port). Kubernetes answers SRV queries of a headless
	// service with the stable pod names of a StatefulSet, so a node keeps
	// its placement identity (and the keys it persisted) across restarts.
	SchemeDNSSRV = "dnssrv:///"
)

// State is a member's health as the client sees it.
type State int

// Member states, from best to worst. Only Ejected members are out of
// placement; the others own keys and receive writes.
const (
	// Healthy: in full rotation.
	Healthy State = iota
	// Warming: recently joined or re-admitted; receives all its writes but
	// a linearly growing share of its reads (see ReadOwners).
	Warming
	// Suspect: failed its last check or a call; still an owner for
	// writes, but asked last for reads until a check succeeds.
	Suspect
	// Ejected: failed HealthConfig.EjectAfter checks in a row; out of
	// placement until HealthConfig.ReadmitAfter checks succeed.
	Ejected
)

func (s State) String() string {
	switch s {
	case Healthy:
		return "healthy"
	case Warming:
		return "warming"
	case Suspect:
		return "suspect"
	case Ejected:
		return "ejected"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText makes State print by name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Member is a snapshot of one node's membership and health.
type Member struct {
	Addr   string `json:"addr"`
	Source string `json:"source"` // "static" or the DNS entry that found it
	State  State  `json:"state"`
	// Since is when the member entered State.
	Since time.Time `json:"since"`
	// ReadShare is the fraction of the reads of its keys the node is asked
	// first for: 1 when healthy, ramping 0→1 while warming, 0 otherwise.
	ReadShare float64   `json:"read_share"`
	Failures  int       `json:"consecutive_failures"`
	Successes int       `json:"consecutive_successes"`
	LastError string    `json:"last_error,omitempty"`
	LastCheck time.Time `json:"last_check"`
}

// member is the mutable record behind a Member; guarded by membership.mu.
type member struct {
	addr, source string
	state        State
	since        time.Time
	warmFrom     time.Time // zero unless slow start is running
	fails, oks   int
	lastErr      string
	lastCheck    time.Time
}

// membership tracks the nodes (static and DNS-discovered), runs their
// health checks and publishes the live view that placement reads.
type membership struct {
	hc           HealthConfig
	replicas     int
	static       []string
	targets      []string
	resolve      func(ctx context.Context, target string) ([]string, error)
	resolveEvery time.Duration
	check        func(ctx context.Context, addr string) error
	onRemove     func(addr string)
	onChange     func(nodes []string) // custom pickers with SetNodes
	log          *slog.Logger

	mu      sync.Mutex
	members map[string]*member
	view    atomic.Pointer[view]

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// splitNodes separates static node addresses from DNS entries.
func splitNodes(nodes []string) (static, targets []string) {
	for _, n := range nodes {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case strings.HasPrefix(n, SchemeDNS), strings.HasPrefix(n, SchemeDNSSRV):
			targets = append(targets, n)
		default:
			static = append(static, n)
		}
	}
	return static, targets
}

// defaultResolve resolves one DNS entry with the system resolver.
func defaultResolve(ctx context.Context, target string) ([]string, error) {
	var out []string
	switch {
	case strings.HasPrefix(target, SchemeDNSSRV):
		_, srvs, err := net.DefaultResolver.LookupSRV(ctx, "", "", strings.TrimPrefix(target, SchemeDNSSRV))
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", target, err)
		}
		for _, s := range srvs {
			out = append(out, net.JoinHostPort(strings.TrimSuffix(s.Target, "."), fmt.Sprint(s.Port)))
		}
	case strings.HasPrefix(target, SchemeDNS):
		host, port, err := net.SplitHostPort(strings.TrimPrefix(target, SchemeDNS))
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w: %w", target, ErrInvalid, err)
		}
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", target, err)
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
	default:
		return nil, fmt.Errorf("resolve %s: %w: unknown scheme", target, ErrInvalid)
	}
	return out, nil
}

// start resolves the DNS entries once (bounded by timeout, failures only
// logged so New works while DNS is down) and starts the background loop.
func (m *membership) start(timeout time.Duration) {
	m.members = map[string]*member{}
	now := time.Now()
	for _, a := range m.static {
		m.members[a] = &member{addr: a, source: "static", state: Healthy, since: now}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	rctx, rcancel := context.WithTimeout(ctx, timeout)
	m.resolveAll(rctx, true)
	rcancel()
	m.publish()
	if m.hc.Interval < 0 && len(m.targets) == 0 {
		return
	}
	m.wg.Add(1)
	go m.loop(ctx)
}

func (m *membership) stop() {
	if m.cancel != nil {
		m.cancel()
	}
	m.wg.Wait()
}

// loop runs health checks every Interval and DNS resolution every
// resolveEvery until stop.
func (m *membership) loop(ctx context.Context) {
	defer m.wg.Done()
	var checkC, resolveC <-chan time.Time
	if m.hc.Interval > 0 {
		t := time.NewTicker(m.hc.Interval)
		defer t.Stop()
		checkC = t.C
	}
	if len(m.targets) > 0 {
		t := time.NewTicker(m.resolveEvery)
		defer t.Stop()
		resolveC = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-checkC:
			m.checkAll(ctx)
		case <-resolveC:
			rctx, cancel := context.WithTimeout(ctx, m.resolveEvery)
			m.resolveAll(rctx, false)
			cancel()
		}
	}
}

// resolveAll re-resolves every DNS entry and adds and removes members. An
// entry that fails or resolves to nothing keeps its previous members: a
// stale list that health checks prune beats an empty cluster.
func (m *membership) resolveAll(ctx context.Context, initial bool) {
	if len(m.targets) == 0 {
		return
	}
	found := map[string]string{} // addr -> target
	ok := map[string]bool{}      // targets that resolved
	for _, t := range m.targets {
		addrs, err := m.resolve(ctx, t)
		if err != nil || len(addrs) == 0 {
			m.log.Warn("cache node discovery failed; keeping the previous members", "target", t, "err", err)
			continue
		}
		ok[t] = true
		for _, a := range addrs {
			if _, dup := found[a]; !dup {
				found[a] = t
			}
		}
	}
	var removed []string
	m.mu.Lock()
	now := time.Now()
	hadMembers := len(m.members) > 0
	for a, t := range found {
		if _, exists := m.members[a]; exists {
			continue
		}
		mb := &member{addr: a, source: t, state: Healthy, since: now}
		// A node that joins a running cluster starts cold: ramp its reads.
		if !initial && hadMembers && m.hc.WarmUp > 0 {
			mb.state, mb.warmFrom = Warming, now
		}
		m.members[a] = mb
		m.log.Info("cache node discovered", "node", a, "target", t)
	}
	for a, mb := range m.members {
		if mb.source != "static" && ok[mb.source] && found[a] == "" {
			delete(m.members, a)
			removed = append(removed, a)
			m.log.Info("cache node left DNS", "node", a, "target", mb.source)
		}
	}
	m.mu.Unlock()
	m.publish()
	for _, a := range removed {
		if m.onRemove != nil {
			m.onRemove(a)
		}
	}
}

// publish rebuilds the placement view from the members.
func (m *membership) publish() {
	m.mu.Lock()
	var addrs []string
	state := map[string]vstate{}
	for _, mb := range m.members {
		if mb.state == Ejected {
			continue
		}
		addrs = append(addrs, mb.addr)
		state[mb.addr] = vstate{warmFrom: mb.warmFrom, suspect: mb.state == Suspect}
	}
	if len(addrs) == 0 {
		// Everything ejected: keep trying every node rather than none, so
		// the first node back is found by calls as well as by checks.
		for _, mb := range m.members {
			addrs = append(addrs, mb.addr)
			state[mb.addr] = vstate{suspect: true}
		}
	}
	m.mu.Unlock()
	v := newView(addrs, state, m.replicas, m.hc.WarmUp)
	m.view.Store(v)
	if m.onChange != nil {
		m.onChange(slices.Clone(v.addrs))
	}
}

// snapshot returns every member, sorted by address.
func (m *membership) snapshot() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	out := make([]Member, 0, len(m.members))
	for _, mb := range m.members {
		out = append(out, Member{
			Addr: mb.addr, Source: mb.source, State: mb.state, Since: mb.since,
			ReadShare: readShare(mb, m.hc.WarmUp, now), Failures: mb.fails, Successes: mb.oks,
			LastError: mb.lastErr, LastCheck: mb.lastCheck,
		})
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Addr, b.Addr) })
	return out
}

func readShare(mb *member, warmUp time.Duration, now time.Time) float64 {
	switch mb.state {
	case Healthy:
		return 1
	case Warming:
		return warmth(mb.warmFrom, warmUp, now)
	}
	return 0
}

// addrs lists every member, for Close and stats.
func (m *membership) addrs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.members))
	for a := range m.members {
		out = append(out, a)
	}
	slices.Sort(out)
	return out
}

// Members returns every known node with its health, sorted by address.
func (c *Client) Members() []Member { return c.members.snapshot() }

// Refresh re-resolves the DNS entries and checks every member now,
// instead of waiting for the next interval (operator tools use it to show
// current health).
func (c *Client) Refresh(ctx context.Context) {
	c.members.resolveAll(ctx, false)
	c.members.checkAll(ctx)
}

// Picker returns the placement in use: Config.Picker, or the default
// rendezvous over live members.
func (c *Client) Picker() Picker { return c.picker }
