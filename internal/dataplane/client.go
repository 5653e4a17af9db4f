package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// ErrNoLookup is returned by Lookup when the node's data plane predates
// the lookup extension (it refused FlagLookup with CodeBadFlags): its
// fetches still work; lookups must go another way. The error also wraps
// the node's *RemoteError.
var ErrNoLookup = errors.New("dataplane: node has no lookup extension")

// RemoteError is an error frame sent by the node.
type RemoteError struct {
	Status Status // StatusKeyError or StatusRequestError
	Code   byte
	Msg    string
}

func (e *RemoteError) Error() string {
	return fmt.Sprintf("dataplane: node refused (status %#x, code %d): %s", byte(e.Status), e.Code, e.Msg)
}

// ResponseReader decodes response frames from R.
type ResponseReader struct {
	R io.Reader
	// MaxBlock bounds the block size a frame may announce; larger is a
	// protocol error (nothing is allocated for it).
	MaxBlock int
	// Chunk is how many bytes ReadBlock reads before it calls fn. Default
	// 256 KiB.
	Chunk int
	hdr   [ResponseHeaderSize]byte
}

// Next reads the next frame header. For StatusFound it returns the block
// size and the caller must read the block with ReadBlock before calling
// Next again. For error frames it reads the payload and returns it as a
// *RemoteError (with the status).
func (rr *ResponseReader) Next() (Status, int, error) {
	if _, err := io.ReadFull(rr.R, rr.hdr[:]); err != nil {
		return 0, 0, err
	}
	s, n := Status(rr.hdr[0]), binary.LittleEndian.Uint32(rr.hdr[1:])
	switch s {
	case StatusFound:
		if rr.MaxBlock > 0 && uint64(n) > uint64(rr.MaxBlock) {
			return s, 0, fmt.Errorf("%w: block of %d bytes, limit %d", ErrProtocol, n, rr.MaxBlock)
		}
		return s, int(n), nil
	case StatusMissing:
		if n != 0 {
			return s, 0, fmt.Errorf("%w: missing-key frame with %d payload bytes", ErrProtocol, n)
		}
		return s, 0, nil
	case StatusKeyError, StatusRequestError:
		if n < 1 || n > MaxMessageBytes {
			return s, 0, fmt.Errorf("%w: error frame of %d bytes", ErrProtocol, n)
		}
		var buf [MaxMessageBytes]byte
		if _, err := io.ReadFull(rr.R, buf[:n]); err != nil {
			return s, 0, unexpected(err)
		}
		return s, 0, &RemoteError{Status: s, Code: buf[0], Msg: string(buf[1:n])}
	case StatusPresence:
		if n < 1 || n > MaxKeysLimit {
			return s, 0, fmt.Errorf("%w: presence frame of %d bytes", ErrProtocol, n)
		}
		return s, int(n), nil
	}
	return s, 0, fmt.Errorf("%w: unknown status %#x", ErrProtocol, byte(s))
}

// ReadBlock reads a block's len(dst) bytes into dst, calling fn (if not
// nil) with each piece right after it arrives, while it is in cache.
func (rr *ResponseReader) ReadBlock(dst []byte, fn func(off int, p []byte)) error {
	chunk := rr.Chunk
	if chunk <= 0 {
		chunk = 256 << 10
	}
	for off := 0; off < len(dst); {
		end := min(off+chunk, len(dst))
		if _, err := io.ReadFull(rr.R, dst[off:end]); err != nil {
			return unexpected(err)
		}
		if fn != nil {
			fn(off, dst[off:end])
		}
		off = end
	}
	return nil
}

// ReadPresence reads the payload of a StatusPresence frame (len(dst)
// bytes, as Next announced) into dst and checks every byte is 0 or 1.
func (rr *ResponseReader) ReadPresence(dst []byte) error {
	if _, err := io.ReadFull(rr.R, dst); err != nil {
		return unexpected(err)
	}
	return checkPresence(dst)
}

func checkPresence(p []byte) error {
	for j, b := range p {
		if b > 1 {
			return fmt.Errorf("%w: presence byte %d is %#x", ErrProtocol, j, b)
		}
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Sink receives the blocks of one response. Block returns the buffer
// (len size) block j is read into; Chunk, if set, sees each piece of it
// as it arrives; Done reports that key j is complete: found, or missing.
type Sink struct {
	Block func(j, size int) []byte
	Chunk func(j, off int, p []byte)
	Done  func(j int, found bool)
}

// Conn is one client connection to a node's data plane. It carries one
// request at a time; it is not safe for concurrent use.
type Conn struct {
	nc        net.Conn
	interrupt func() // cuts the exchange in progress (an AfterFunc of its ctx)
	rr        ResponseReader
	req       []byte // the last request, its capacity reused
	resp      []byte // the last lookup's response frame, its capacity reused
	broken    bool
}

// DialOptions tune client connections.
type DialOptions struct {
	MaxBlock    int // largest block accepted; default 256 MiB
	ReadBuffer  int // SO_RCVBUF; 0 = the system's default
	WriteBuffer int // SO_SNDBUF; 0 = the system's default
	Chunk       int // see ResponseReader.Chunk
	// TLS, if set, secures the connection (the node must be started with
	// --tls-cert); a ServerName of "" means the host of addr.
	TLS *tls.Config
	// Token, if set, is sent in a hello frame before the first request.
	Token string
}

// Dial connects to a node's data plane.
func Dial(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		if o.ReadBuffer > 0 {
			_ = tc.SetReadBuffer(o.ReadBuffer)
		}
		if o.WriteBuffer > 0 {
			_ = tc.SetWriteBuffer(o.WriteBuffer)
		}
	}
	if o.TLS != nil {
		cfg := o.TLS
		if cfg.ServerName == "" && !cfg.InsecureSkipVerify {
			cfg = cfg.Clone()
			cfg.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("dataplane: TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	if o.Token != "" {
		if len(o.Token) > MaxTokenBytes {
			nc.Close()
			return nil, fmt.Errorf("dataplane: token of %d bytes, at most %d", len(o.Token), MaxTokenBytes)
		}
		// No answer comes to a good hello: the first request's response
		// is the node's verdict, so the hello costs no round trip.
		if dl, ok := ctx.Deadline(); ok {
			_ = nc.SetWriteDeadline(dl)
		}
		_, err := nc.Write(AppendHello(nil, o.Token))
		_ = nc.SetWriteDeadline(time.Time{})
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("dataplane: hello to %s: %w", addr, err)
		}
	}
	return NewConn(nc, o), nil
}

// NewConn wraps an established connection.
func NewConn(nc net.Conn, o DialOptions) *Conn {
	if o.MaxBlock <= 0 {
		o.MaxBlock = 256 << 20
	}
	return &Conn{nc: nc, rr: ResponseReader{R: nc, MaxBlock: o.MaxBlock, Chunk: o.Chunk},
		interrupt: func() { _ = nc.SetDeadline(time.Unix(1, 0)) }}
}

// Broken reports whether the connection is unusable (a request failed
// mid-response); the caller must Close it rather than reuse it.
func (c *Conn) Broken() bool { return c.broken }

// Close closes the connection.
func (c *Conn) Close() error { c.broken = true; return c.nc.Close() }

// Get sends one request and reads its whole response into sink. The
// connection's deadline is ctx's deadline, and cancelling ctx interrupts
// the exchange. It returns nil when the response ended properly (every
// key answered, or the first miss with FlagStopAtMiss); then the
// connection can carry the next request. A *RemoteError with
// StatusKeyError ends the response early but leaves the connection
// usable; any other error breaks it.
func (c *Conn) Get(ctx context.Context, flags uint8, ns prefix.Namespace, keys []prefix.Key, sink Sink) (err error) {
	if flags&FlagLookup != 0 {
		return errors.New("dataplane: Get with FlagLookup (use Lookup)")
	}
	ex, err := c.begin(ctx, time.Time{})
	if err != nil {
		return err
	}
	defer func() { err = c.end(ctx, ex, err) }()
	c.req = AppendRequest(c.req[:0], flags, ns, keys)
	if _, err := c.nc.Write(c.req); err != nil {
		return err
	}
	for j := range keys {
		s, n, err := c.rr.Next()
		if err != nil {
			return err
		}
		if s != StatusFound && s != StatusMissing {
			return fmt.Errorf("%w: status %#x in a block response", ErrProtocol, byte(s))
		}
		if s == StatusMissing {
			sink.Done(j, false)
			if flags&FlagStopAtMiss != 0 {
				return nil
			}
			continue
		}
		dst := sink.Block(j, n)
		if len(dst) != n {
			return fmt.Errorf("dataplane: sink gave %d bytes for a %d-byte block", len(dst), n)
		}
		var fn func(int, []byte)
		if sink.Chunk != nil {
			fn = func(off int, p []byte) { sink.Chunk(j, off, p) }
		}
		if err := c.rr.ReadBlock(dst, fn); err != nil {
			return err
		}
		sink.Done(j, true)
	}
	return nil
}

// exchange is the deadline state of one request.
type exchange struct {
	dl   time.Time
	stop func() bool
}

// begin sets the connection's deadline, the earlier of ctx's and dl (zero:
// none), and arranges for a cancellation of ctx to interrupt the exchange.
func (c *Conn) begin(ctx context.Context, dl time.Time) (exchange, error) {
	if c.broken {
		return exchange{}, errors.New("dataplane: connection is broken")
	}
	if err := ctx.Err(); err != nil {
		return exchange{}, err
	}
	if cdl, ok := ctx.Deadline(); ok && (dl.IsZero() || cdl.Before(dl)) {
		dl = cdl
	}
	if err := c.nc.SetDeadline(dl); err != nil { // zero: none
		c.broken = true
		return exchange{}, err
	}
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, c.interrupt)
	}
	return exchange{dl: dl, stop: stop}, nil
}

// end closes an exchange begun by begin: it marks the connection broken
// unless the response ended properly (err nil or a key error) and ctx did
// not cut it, and says why ctx ended in err.
func (c *Conn) end(ctx context.Context, ex exchange, err error) error {
	if ex.stop != nil && !ex.stop() || err != nil && !isKeyError(err) {
		c.broken = true // the deadline was cut short: the connection may hold a partial response
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		err = fmt.Errorf("%w (%w)", ctx.Err(), err)
	case !ex.dl.IsZero() && errors.Is(err, os.ErrDeadlineExceeded):
		// The socket's deadline (ctx's) fired just before ctx's timer.
		err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
	}
	return err
}

// Lookup sends a FlagLookup request for keys[idx[0]], keys[idx[1]], ...
// (every key when idx is nil) and returns the node's answer appended to
// dst[:0]: one bool per key, true when present. Deadline and cancellation
// are as for Get. A node without the lookup extension fails it with an
// error matching ErrNoLookup (and closes the connection).
func (c *Conn) Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, idx []int, dst []bool) (present []bool, err error) {
	return c.LookupUntil(ctx, time.Time{}, ns, keys, idx, dst)
}

// LookupUntil is Lookup that also gives up at dl (zero: only at ctx's
// deadline), as if ctx had that deadline, without deriving a context for
// it: the error says context.DeadlineExceeded when either deadline cut
// the exchange.
func (c *Conn) LookupUntil(ctx context.Context, dl time.Time, ns prefix.Namespace, keys []prefix.Key, idx []int, dst []bool) (present []bool, err error) {
	n := len(keys)
	if idx != nil {
		n = len(idx)
	}
	if n < 1 || n > MaxKeysLimit {
		return nil, fmt.Errorf("dataplane: lookup of %d keys, 1 to %d allowed", n, MaxKeysLimit)
	}
	ex, err := c.begin(ctx, dl)
	if err != nil {
		return nil, err
	}
	defer func() { err = c.end(ctx, ex, err) }()
	if idx != nil {
		c.req = AppendRequestIdx(c.req[:0], FlagLookup, ns, keys, idx)
	} else {
		c.req = AppendRequest(c.req[:0], FlagLookup, ns, keys)
	}
	if _, err := c.nc.Write(c.req); err != nil {
		return nil, err
	}
	// The answer is one frame of exactly ResponseHeaderSize+n bytes: read
	// it in one go when it has arrived whole (nothing follows it).
	if cap(c.resp) < ResponseHeaderSize+n {
		c.resp = make([]byte, ResponseHeaderSize+n)
	}
	buf := c.resp[:ResponseHeaderSize+n]
	got, err := io.ReadAtLeast(c.nc, buf, ResponseHeaderSize)
	if err != nil {
		return nil, unexpected(err)
	}
	if Status(buf[0]) != StatusPresence {
		// An error frame (or garbage): decode it from what was read
		// and the rest of the stream.
		rr := ResponseReader{R: io.MultiReader(bytes.NewReader(buf[:got]), c.nc), MaxBlock: 1}
		s, _, err := rr.Next()
		var re *RemoteError
		if errors.As(err, &re) && re.Status == StatusRequestError && re.Code == CodeBadFlags {
			return nil, fmt.Errorf("%w: %w", ErrNoLookup, err)
		}
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: status %#x in a lookup response", ErrProtocol, byte(s))
	}
	if l := binary.LittleEndian.Uint32(buf[1:ResponseHeaderSize]); l != uint32(n) {
		return nil, fmt.Errorf("%w: presence frame of %d bytes for %d keys", ErrProtocol, l, n)
	}
	if _, err := io.ReadFull(c.nc, buf[got:]); err != nil {
		return nil, unexpected(err)
	}
	p := buf[ResponseHeaderSize:]
	if err := checkPresence(p); err != nil {
		return nil, err
	}
	present = slices.Grow(dst[:0], len(p))
	for _, b := range p {
		present = append(present, b != 0)
	}
	return present, nil
}

func isKeyError(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == StatusKeyError
}
