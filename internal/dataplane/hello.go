package dataplane

import (
	"encoding/binary"
	"io"
)

// The hello frame authenticates a connection (docs/dataplane.md,
// "Authentication"): a client with a token sends it once, before its first
// request; the node checks the token again before every request, so a
// revoked token stops working on connections already open.
const (
	// HelloMagic opens a hello frame.
	HelloMagic = "KVDH"
	// HelloVersion is the hello frame's version.
	HelloVersion = 1
	// HelloHeaderSize: magic (4), version (1), reserved (1), token length (2).
	HelloHeaderSize = 4 + 1 + 1 + 2
	// MaxTokenBytes bounds a hello frame's token.
	MaxTokenBytes = 4096
)

// Error codes of authentication failures (request error frames; the node
// closes the connection after them).
const (
	CodeUnauthenticated = 8 // no, unknown or revoked credential
	CodePermission      = 9 // role too low, or protected mode refused the address
)

// AppendHello appends a hello frame carrying token to b.
func AppendHello(b []byte, token string) []byte {
	b = append(b, HelloMagic...)
	b = append(b, HelloVersion, 0)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(token)))
	return append(b, token...)
}

// ReadHello reads one hello frame and returns its token. Malformed frames are *ProtocolError;
// it never allocates more than MaxTokenBytes.
func ReadHello(r io.Reader) (string, error) {
	var h [HelloHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return "", err
	}
	if string(h[:4]) != HelloMagic {
		return "", protoErr(CodeBadMagic, "bad hello magic %q", h[:4])
	}
	if h[4] != HelloVersion {
		return "", protoErr(CodeBadVersion, "hello version %d, node speaks %d", h[4], HelloVersion)
	}
	if h[5] != 0 {
		return "", protoErr(CodeBadFlags, "hello reserved byte %#x", h[5])
	}
	n := int(binary.LittleEndian.Uint16(h[6:]))
	if n == 0 || n > MaxTokenBytes {
		return "", protoErr(CodeUnauthenticated, "hello token of %d bytes, 1 to %d allowed", n, MaxTokenBytes)
	}
	tok := make([]byte, n)
	if _, err := io.ReadFull(r, tok); err != nil {
		return "", unexpected(err)
	}
	return string(tok), nil
}
