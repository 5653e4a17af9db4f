package cachenode

import (
	"net"
	"sync"
)

// defaultMetricsConnsPerAddr is the default of Config.MetricsConnsPerAddr:
// a scraper, a probe and an operator's curl need a handful, not dozens.
const defaultMetricsConnsPerAddr = 8

// perAddrListener bounds the open connections from one client IP: Accept
// closes a connection from an address that already has max open, at once
// and before anything is read (it costs no goroutine or TLS handshake), and
// goes on accepting the others. A connection's slot is freed when it is
// closed.
type perAddrListener struct {
	net.Listener
	max     int
	refused func() // called for each refused connection; may be nil

	mu   sync.Mutex
	open map[string]int
}

func newPerAddrListener(l net.Listener, max int, refused func()) *perAddrListener {
	return &perAddrListener{Listener: l, max: max, refused: refused, open: map[string]int{}}
}

func (l *perAddrListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := c.RemoteAddr().String()
		if h, _, err := net.SplitHostPort(addr); err == nil {
			addr = h
		}
		l.mu.Lock()
		ok := l.open[addr] < l.max
		if ok {
			l.open[addr]++
		}
		l.mu.Unlock()
		if !ok {
			c.Close()
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		return &slotConn{Conn: c, l: l, addr: addr}, nil
	}
}

func (l *perAddrListener) release(addr string) {
	l.mu.Lock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
	l.mu.Unlock()
}

// slotConn gives its listener slot back on the first Close.
type slotConn struct {
	net.Conn
	l    *perAddrListener
	addr string
	once sync.Once
}

func (c *slotConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
