// Package dataplane is kvcache's bulk data plane: a small binary protocol
// over plain TCP that moves blocks from a node's memory map to a client's
// buffer with no user-space copy on the node and one on the client (the
// read itself). Control (placement, lookups, puts, stats) stays on gRPC;
// a node advertises its data-plane address in Stats.
//
// The wire format is specified byte for byte in docs/dataplane.md. This
// package has no gRPC dependency.
package dataplane

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// Wire constants (docs/dataplane.md).
const (
	// Magic opens every request.
	Magic = "KVDP"
	// Version is the protocol version this package speaks.
	Version = 1
	// RequestHeaderSize is the fixed part of a request: magic (4),
	// version (1), flags (1), reserved (2), key count (4), namespace (32).
	RequestHeaderSize = 4 + 1 + 1 + 2 + 4 + prefix.Size
	// ResponseHeaderSize is the header of every response frame: status (1)
	// and payload length (4).
	ResponseHeaderSize = 5
	// MaxKeysLimit is the largest key count the protocol allows.
	MaxKeysLimit = 1 << 16
	// MaxMessageBytes bounds the message of an error frame.
	MaxMessageBytes = 4 << 10
)

// Request flags.
const (
	// FlagStopAtMiss: the node ends the response after the first missing key.
	FlagStopAtMiss = 1 << 0
	// FlagLookup (version 1, lookup extension): the node answers presence
	// only, in one StatusPresence frame of N bytes; it must not be combined
	// with other flags. A node without the extension refuses it with
	// CodeBadFlags, which tells the client to look up over gRPC.
	FlagLookup = 1 << 1
	knownFlags = FlagStopAtMiss | FlagLookup
)

// Status is the first byte of a response frame.
type Status uint8

const (
	// StatusFound: the payload is the block.
	StatusFound Status = 0x00
	// StatusMissing: the node does not hold the key; the payload is empty.
	StatusMissing Status = 0x01
	// StatusKeyError: the node could not read the key; the payload is a code
	// byte and a message. The response ends here (later keys are not
	// answered); the connection stays usable.
	StatusKeyError Status = 0x02
	// StatusPresence: the answer to a FlagLookup request; the payload is N
	// bytes, byte j 0x01 if the node holds key j, 0x00 if not.
	StatusPresence Status = 0x03
	// StatusRequestError: the request was refused; the payload is a code byte
	// and a message. The node closes the connection after it.
	StatusRequestError Status = 0xFF
)

// Error codes carried by error frames.
const (
	CodeBadMagic   = 1 // request did not start with Magic
	CodeBadVersion = 2 // unsupported version
	CodeBadFlags   = 3 // unknown flag bits or nonzero reserved bytes
	CodeBadCount   = 4 // key count 0 or above the node's limit
	CodeBusy       = 5 // the node has too many data-plane connections
	CodeInternal   = 6 // the store failed
	CodeShutdown   = 7 // the node is shutting down
)

// Request is one decoded request.
type Request struct {
	Flags     uint8
	Namespace prefix.Namespace
	Keys      []prefix.Key
}

// StopAtMiss reports whether the request asks to stop at the first miss.
func (r *Request) StopAtMiss() bool { return r.Flags&FlagStopAtMiss != 0 }

// Lookup reports whether the request asks for presence only.
func (r *Request) Lookup() bool { return r.Flags&FlagLookup != 0 }

// AppendRequest appends the encoding of a request to b.
func AppendRequest(b []byte, flags uint8, ns prefix.Namespace, keys []prefix.Key) []byte {
	b = appendRequestHeader(b, flags, ns, len(keys))
	for i := range keys {
		b = append(b, keys[i][:]...)
	}
	return b
}

// AppendRequestIdx is AppendRequest of the keys keys[idx[0]], keys[idx[1]],
// ..., without building that slice.
func AppendRequestIdx(b []byte, flags uint8, ns prefix.Namespace, keys []prefix.Key, idx []int) []byte {
	b = appendRequestHeader(b, flags, ns, len(idx))
	for _, i := range idx {
		b = append(b, keys[i][:]...)
	}
	return b
}

func appendRequestHeader(b []byte, flags uint8, ns prefix.Namespace, n int) []byte {
	b = append(b, Magic...)
	b = append(b, Version, flags, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(n))
	return append(b, ns[:]...)
}

// ProtocolError is a malformed request or response, with the code an error
// frame carries.
type ProtocolError struct {
	Code byte
	Msg  string
}

func (e *ProtocolError) Error() string { return fmt.Sprintf("dataplane: code %d: %s", e.Code, e.Msg) }

// ErrProtocol matches every *ProtocolError and every malformed response.
var ErrProtocol = errors.New("dataplane: protocol error")

func (e *ProtocolError) Is(target error) bool { return target == ErrProtocol }

func protoErr(code byte, format string, args ...any) error {
	return &ProtocolError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// parseRequestHeader checks the fixed part of a request and returns its
// flags, namespace and key count. maxKeys bounds the count.
func parseRequestHeader(h []byte, maxKeys int) (flags uint8, ns prefix.Namespace, n int, err error) {
	if len(h) < RequestHeaderSize {
		return 0, ns, 0, protoErr(CodeBadMagic, "short request header")
	}
	if string(h[:4]) != Magic {
		return 0, ns, 0, protoErr(CodeBadMagic, "bad magic %q", h[:4])
	}
	if h[4] != Version {
		return 0, ns, 0, protoErr(CodeBadVersion, "version %d, node speaks %d", h[4], Version)
	}
	flags = h[5]
	if flags&^knownFlags != 0 || flags&FlagLookup != 0 && flags != FlagLookup || h[6] != 0 || h[7] != 0 {
		return 0, ns, 0, protoErr(CodeBadFlags, "unknown flags %#x or reserved bytes %#x %#x", flags, h[6], h[7])
	}
	c := binary.LittleEndian.Uint32(h[8:12])
	if c == 0 || c > uint32(maxKeys) {
		return 0, ns, 0, protoErr(CodeBadCount, "%d keys, 1 to %d allowed", c, maxKeys)
	}
	copy(ns[:], h[12:RequestHeaderSize])
	return flags, ns, int(c), nil
}

// ReadRequest reads one request from r into req, reusing req.Keys'
// capacity. It never allocates more than maxKeys keys. It returns io.EOF
// when r ends cleanly before a request, a *ProtocolError for a malformed
// request, and other errors of r as they are.
func ReadRequest(r io.Reader, maxKeys int, hdr *[RequestHeaderSize]byte, req *Request) error {
	maxKeys = min(max(maxKeys, 1), MaxKeysLimit)
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	flags, ns, n, err := parseRequestHeader(hdr[:], maxKeys)
	if err != nil {
		return err
	}
	req.Flags, req.Namespace = flags, ns
	if cap(req.Keys) < n {
		req.Keys = make([]prefix.Key, n)
	}
	req.Keys = req.Keys[:n]
	for i := range req.Keys {
		if _, err := io.ReadFull(r, req.Keys[i][:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// putResponseHeader fills a response frame header.
func putResponseHeader(h []byte, s Status, n uint32) {
	h[0] = byte(s)
	binary.LittleEndian.PutUint32(h[1:5], n)
}

// appendErrorFrame appends an error frame (status, length, code, message).
func appendErrorFrame(b []byte, s Status, code byte, msg string) []byte {
	if len(msg) > MaxMessageBytes-1 {
		msg = msg[:MaxMessageBytes-1]
	}
	var h [ResponseHeaderSize]byte
	putResponseHeader(h[:], s, uint32(1+len(msg)))
	b = append(b, h[:]...)
	b = append(b, code)
	return append(b, msg...)
}
