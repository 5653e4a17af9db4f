package dataplane

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
)

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
	nc     net.Conn
	rr     ResponseReader
	req    []byte
	broken bool
}

// DialOptions tune client connections.
type DialOptions struct {
	MaxBlock    int // largest block accepted; default 256 MiB
	ReadBuffer  int // SO_RCVBUF; 0 = the system's default
	WriteBuffer int // SO_SNDBUF; 0 = the system's default
	Chunk       int // see ResponseReader.Chunk
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
	return NewConn(nc, o), nil
}

// NewConn wraps an established connection.
func NewConn(nc net.Conn, o DialOptions) *Conn {
	if o.MaxBlock <= 0 {
		o.MaxBlock = 256 << 20
	}
	return &Conn{nc: nc, rr: ResponseReader{R: nc, MaxBlock: o.MaxBlock, Chunk: o.Chunk}}
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
	if c.broken {
		return errors.New("dataplane: connection is broken")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	dl, _ := ctx.Deadline()
	if err := c.nc.SetDeadline(dl); err != nil { // zero: none
		c.broken = true
		return err
	}
	stop := context.AfterFunc(ctx, func() { _ = c.nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() || err != nil && !isKeyError(err) {
			c.broken = true // the deadline was cut short: the connection may hold a partial response
		}
		switch {
		case err == nil:
		case ctx.Err() != nil:
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		case !dl.IsZero() && errors.Is(err, os.ErrDeadlineExceeded):
			// The socket's deadline (ctx's) fired just before ctx's timer.
			err = fmt.Errorf("%w (%w)", context.DeadlineExceeded, err)
		}
	}()
	c.req = AppendRequest(c.req[:0], flags, ns, keys)
	if _, err := c.nc.Write(c.req); err != nil {
		return err
	}
	for j := range keys {
		s, n, err := c.rr.Next()
		if err != nil {
			return err
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

func isKeyError(err error) bool {
	var re *RemoteError
	return errors.As(err, &re) && re.Status == StatusKeyError
}
