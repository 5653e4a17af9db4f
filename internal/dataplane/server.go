package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Blocks is what the server reads from a store; pkg/store's Store has it.
// It is declared here, where it is used, so the package (and every client
// that links it for the protocol) does not depend on the storage engine.
type Blocks interface {
	// View calls fn for each key with its block (valid only during fn)
	// or found false; see store.Store.View.
	View(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, fn func(i int, block []byte, found bool) error) error
	// Contains reports, from one snapshot, which keys are present.
	Contains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) ([]bool, error)
}

// appendContainer is Blocks whose Contains can answer into the caller's
// buffer (pkg/store's DB): a lookup then allocates nothing on the node.
type appendContainer interface {
	AppendContains(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst []bool) ([]bool, error)
}

// ServerOptions tune a Server. Zero values mean defaults.
type ServerOptions struct {
	// MaxConns bounds concurrent connections. A connection over the limit
	// takes the slot of the connection idle (waiting for a request) the
	// longest, which is closed; when none is idle it gets a CodeBusy error
	// frame and is closed. So idle connections never lock active clients
	// out. Default 256.
	MaxConns int
	// MaxConnsPerAddr bounds the connections from one client IP address;
	// one over it gets CodeBusy and is closed. Default 64.
	MaxConnsPerAddr int
	// OnConn, if set, is called when a connection is refused ("busy": all
	// slots serving requests; "per_addr": its address is at
	// MaxConnsPerAddr) or an idle one is closed to free its slot
	// ("reclaimed").
	OnConn func(event string)
	// MaxKeys bounds the keys of one request. Default (and at most) 65536.
	MaxKeys int
	// WriteTimeout bounds the write of one block: a client that stops
	// reading loses its connection after it, so it never pins a read
	// transaction (which would block the growth of bbolt's memory map)
	// for longer. Default 10s.
	WriteTimeout time.Duration
	// IdleTimeout closes a connection that sends no request for this long.
	// Default 2m.
	IdleTimeout time.Duration
	// ReadTimeout bounds the rest of a request once its first byte came.
	// Default 10s.
	ReadTimeout time.Duration
	// WriteBuffer sets SO_SNDBUF of accepted connections; 0 leaves the
	// system's default.
	WriteBuffer int
	// OnRequest, if set, is called after each request with its key count,
	// the blocks and bytes sent, and the error that ended it (nil if none).
	OnRequest func(keys, blocks int, bytes int64, err error)
	// Verifier, if set, identifies the caller of every request (hello
	// token, else TLS client certificate, else protected mode) and its
	// tenant is folded into the request's namespace before the store sees
	// it. Nil serves everyone unchecked in the shared tenant (in-process
	// use and tests).
	Verifier *auth.Verifier
	// OnServed, if set, is called after each block request with the
	// caller's tenant, the blocks found and the keys missed.
	OnServed func(tenant string, found, missed int)
	// StoreClosed reports whether an error of the Blocks means the store
	// is closed for good (for pkg/store: errors.Is(err, store.ErrClosed)).
	// Such an error is answered with CodeShutdown and ends the
	// connection. Nil: only the server's own Close counts as shutdown.
	StoreClosed func(error) bool
	Logger      *slog.Logger
}

// Server serves a store's blocks over the data-plane protocol.
type Server struct {
	st   Blocks
	ac   appendContainer // st, when it is one
	opts ServerOptions
	log  *slog.Logger
	ctx  context.Context // ends on Close
	stop context.CancelFunc

	mu      sync.Mutex
	lis     map[net.Listener]struct{}
	conns   map[net.Conn]*connSlot
	perAddr map[string]int
	closed  bool
	wg      sync.WaitGroup
}

// connSlot is the bookkeeping of one accepted connection, under Server.mu.
type connSlot struct {
	addr      string    // client IP
	idleSince time.Time // zero while a request is served
	gone      bool      // its slot was freed (reclaimed or closed)
}

// NewServer returns a server over st; it does not own st.
func NewServer(st Blocks, o *ServerOptions) *Server {
	var opts ServerOptions
	if o != nil {
		opts = *o
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = 256
	}
	if opts.MaxConnsPerAddr <= 0 {
		opts.MaxConnsPerAddr = 64
	}
	if opts.MaxKeys <= 0 || opts.MaxKeys > MaxKeysLimit {
		opts.MaxKeys = MaxKeysLimit
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	ac, _ := st.(appendContainer)
	return &Server{st: st, ac: ac, opts: opts, log: log, ctx: ctx, stop: cancel,
		lis: map[net.Listener]struct{}{}, conns: map[net.Conn]*connSlot{}, perAddr: map[string]int{}}
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("dataplane: server closed")

// Serve accepts connections on l until Close; it closes l.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.lis[l] = struct{}{}
	s.mu.Unlock()
	defer l.Close()
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		slot, refused := s.admit(nc)
		if refused != "" {
			if refused == errServerClosed {
				nc.Close()
				return ErrServerClosed
			}
			s.event(refused)
			s.refuse(nc, CodeBusy, "data plane: "+map[string]string{
				"busy":     "every connection slot is serving a request",
				"per_addr": "too many connections from this address",
			}[refused])
			continue
		}
		go s.serveConn(nc, slot)
	}
}

const errServerClosed = "closed"

// admit takes a slot for nc, closing the longest-idle connection when all
// are taken, or names why nc is refused.
func (s *Server) admit(nc net.Conn) (*connSlot, string) {
	addr := nc.RemoteAddr().String()
	if h, _, err := net.SplitHostPort(addr); err == nil {
		addr = h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return nil, errServerClosed
	case s.perAddr[addr] >= s.opts.MaxConnsPerAddr:
		return nil, "per_addr"
	case len(s.conns) >= s.opts.MaxConns:
		var victim net.Conn
		var oldest *connSlot
		for c, sl := range s.conns {
			if !sl.idleSince.IsZero() && (oldest == nil || sl.idleSince.Before(oldest.idleSince)) {
				victim, oldest = c, sl
			}
		}
		if victim == nil {
			return nil, "busy"
		}
		s.freeLocked(victim, oldest)
		victim.Close() // its goroutine sees the error and exits
		if s.opts.OnConn != nil {
			defer s.opts.OnConn("reclaimed")
		}
	}
	slot := &connSlot{addr: addr}
	s.conns[nc] = slot
	s.perAddr[addr]++
	s.wg.Add(1)
	return slot, ""
}

// freeLocked gives up nc's slot once.
func (s *Server) freeLocked(nc net.Conn, sl *connSlot) {
	if sl.gone {
		return
	}
	sl.gone = true
	delete(s.conns, nc)
	if s.perAddr[sl.addr]--; s.perAddr[sl.addr] <= 0 {
		delete(s.perAddr, sl.addr)
	}
}

// setIdle marks nc as waiting for a request (idle) or serving one.
func (s *Server) setIdle(sl *connSlot, idle bool) {
	s.mu.Lock()
	if idle {
		sl.idleSince = time.Now()
	} else {
		sl.idleSince = time.Time{}
	}
	s.mu.Unlock()
}

func (s *Server) event(e string) {
	if s.opts.OnConn != nil {
		s.opts.OnConn(e)
	}
}

// Conns is how many connections hold a slot now.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// refuse sends an error frame (best effort, briefly) and closes nc.
func (s *Server) refuse(nc net.Conn, code byte, msg string) {
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = nc.Write(appendErrorFrame(nil, StatusRequestError, code, msg))
	_ = nc.Close()
}

// Close stops accepting, closes every connection (cutting requests in
// flight) and waits for their goroutines, so no read transaction of the
// store is open once it returns.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.stop()
	for l := range s.lis {
		l.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// conn is the per-connection state of the server.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	rhdr [RequestHeaderSize]byte
	req  Request
	hdr  [ResponseHeaderSize]byte
	iov  [2][]byte
	one  [1]prefix.Key
	out  []byte // a lookup's response frame, reused
	has  []bool // a lookup's presence from the store, reused

	cert     *x509.Certificate // verified TLS client certificate, if any
	token    string            // from the hello frame
	hasToken bool
	tenant   string // of the current request
}

func (s *Server) serveConn(nc net.Conn, slot *connSlot) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		s.freeLocked(nc, slot)
		s.mu.Unlock()
		nc.Close()
	}()
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("dataplane: panic serving a connection", "panic", p, "remote", nc.RemoteAddr().String())
		}
	}()
	if s.opts.WriteBuffer > 0 {
		if tc, ok := nc.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(s.opts.WriteBuffer)
		}
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, 4096)}
	if tc, ok := nc.(*tls.Conn); ok {
		_ = nc.SetDeadline(time.Now().Add(s.opts.ReadTimeout))
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return
		}
		if st := tc.ConnectionState(); len(st.VerifiedChains) > 0 && len(st.VerifiedChains[0]) > 0 {
			c.cert = st.VerifiedChains[0][0]
		}
		_ = nc.SetDeadline(time.Time{})
	}
	for first := true; ; first = false {
		// Wait for the next request for up to IdleTimeout, then give the
		// rest of it ReadTimeout.
		_ = nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
		s.setIdle(slot, c.br.Buffered() == 0)
		if _, err := c.br.Peek(1); err != nil {
			return // closed, idle, reclaimed or gone
		}
		s.setIdle(slot, false)
		_ = nc.SetReadDeadline(time.Now().Add(s.opts.ReadTimeout))
		if first {
			if m, _ := c.br.Peek(len(HelloMagic)); string(m) == HelloMagic {
				tok, err := ReadHello(c.br)
				if err != nil {
					if pe := asProtocolError(err); pe != nil {
						s.refuse(nc, pe.Code, pe.Msg)
					}
					return
				}
				c.token, c.hasToken = tok, true
				continue
			}
		}
		err := ReadRequest(c.br, s.opts.MaxKeys, &c.rhdr, &c.req)
		if err != nil {
			if pe := asProtocolError(err); pe != nil {
				s.refuse(nc, pe.Code, pe.Msg)
			}
			return
		}
		if !s.authorize(c) {
			return
		}
		if c.req.Lookup() {
			err = s.serveLookup(c)
		} else {
			err = s.serveRequest(c)
		}
		if err != nil {
			return
		}
	}
}

// asProtocolError is err as a *ProtocolError, or nil. (Its target
// escapes to the heap: kept out of serveConn's loop, it costs an
// allocation only when a request fails, not one per request.)
func asProtocolError(err error) *ProtocolError {
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}

// authorize identifies the caller of the request in c (again for every
// request, so revocation reaches open connections), refuses it and
// reports false if it may not read, and folds its tenant into the
// request's namespace.
func (s *Server) authorize(c *conn) bool {
	v := s.opts.Verifier
	if v == nil {
		c.tenant = ""
		return true
	}
	id, err := v.Identify(c.token, c.hasToken, c.cert, c.nc.RemoteAddr())
	if err == nil {
		err = id.Require(auth.RoleRead)
	}
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		s.refuse(c.nc, CodeUnauthenticated, err.Error())
		return false
	case err != nil:
		s.refuse(c.nc, CodePermission, err.Error())
		return false
	}
	c.tenant = id.Tenant
	c.req.Namespace = prefix.WithTenant(c.req.Namespace, id.Tenant)
	return true
}

// serveLookup answers a FlagLookup request: presence of every key from
// one read transaction (store.Contains), as one StatusPresence frame
// written with one write from the connection's buffer.
func (s *Server) serveLookup(c *conn) (err error) {
	req := &c.req
	if s.opts.OnRequest != nil {
		defer func() { s.opts.OnRequest(len(req.Keys), 0, 0, err) }()
	}
	var present []bool
	var cerr error
	if s.ac != nil {
		present, cerr = s.ac.AppendContains(s.ctx, req.Namespace, req.Keys, c.has)
		c.has = present[:0]
	} else {
		present, cerr = s.st.Contains(s.ctx, req.Namespace, req.Keys)
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if cerr != nil {
		return s.keyError(c, cerr)
	}
	n := len(req.Keys)
	if cap(c.out) < ResponseHeaderSize+n {
		c.out = make([]byte, ResponseHeaderSize+n)
	}
	out := c.out[:ResponseHeaderSize+n]
	putResponseHeader(out, StatusPresence, uint32(n))
	for i := range n {
		out[ResponseHeaderSize+i] = 0
		if i < len(present) && present[i] {
			out[ResponseHeaderSize+i] = 1
		}
	}
	_, err = c.nc.Write(out)
	return err
}

// keyError answers a request the store failed with a key error frame (the
// connection stays usable unless the node is shutting down).
func (s *Server) keyError(c *conn, verr error) error {
	code := byte(CodeInternal)
	if s.ctx.Err() != nil || s.opts.StoreClosed != nil && s.opts.StoreClosed(verr) {
		code = CodeShutdown
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if _, err := c.nc.Write(appendErrorFrame(nil, StatusKeyError, code, verr.Error())); err != nil {
		return err
	}
	if code == CodeShutdown {
		return verr
	}
	return nil
}

// errStop ends a request's iteration at a miss with FlagStopAtMiss.
var errStop = errors.New("dataplane: stop at miss")

// serveRequest answers one request: every key in its own read transaction
// (so a slow reader pins one block, not the request), each block written
// from the memory map with its header in one writev.
func (s *Server) serveRequest(c *conn) (err error) {
	req := &c.req
	var blocks, missed int
	var bytes int64
	if s.opts.OnRequest != nil {
		defer func() { s.opts.OnRequest(len(req.Keys), blocks, bytes, err) }()
	}
	if s.opts.OnServed != nil {
		defer func() { s.opts.OnServed(c.tenant, blocks, missed) }()
	}
	stopAtMiss := req.StopAtMiss()
	for i := range req.Keys {
		c.one[0] = req.Keys[i]
		var wrote bool
		verr := s.st.View(s.ctx, req.Namespace, c.one[:], func(_ int, block []byte, found bool) error {
			wrote = true
			if !found {
				missed++
				putResponseHeader(c.hdr[:], StatusMissing, 0)
				_ = c.nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
				if _, err := c.nc.Write(c.hdr[:]); err != nil {
					return err
				}
				if stopAtMiss {
					return errStop
				}
				return nil
			}
			putResponseHeader(c.hdr[:], StatusFound, uint32(len(block)))
			_ = c.nc.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
			c.iov[0], c.iov[1] = c.hdr[:], block
			bufs := net.Buffers(c.iov[:])
			_, err := bufs.WriteTo(c.nc)
			c.iov[1] = nil // the mapped bytes die with the transaction
			if err != nil {
				return err
			}
			blocks++
			bytes += int64(len(block))
			return nil
		})
		switch {
		case errors.Is(verr, errStop):
			return nil
		case verr != nil && !wrote:
			// The store failed before the key was answered: say so and
			// end the response; the connection stays usable.
			return s.keyError(c, verr)
		case verr != nil:
			return verr // a write failed: the connection is done
		}
	}
	return nil
}
