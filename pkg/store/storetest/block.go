// Package storetest is the conformance suite every store.Store
// implementation must pass, plus a fake block format and verifier so the
// suite does not depend on the real codec.
package storetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// ErrBadBlock is wrapped by every error Verify returns.
var ErrBadBlock = errors.New("storetest: bad block")

// Fake block format: magic(2) | hasParent(1) | parent(32) | crc32c(4) | payload.
var magic = []byte("TB")

const headerLen = 2 + 1 + prefix.Size + 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Block encodes payload in the fake format, with parent when non-nil.
func Block(parent *prefix.Key, payload []byte) []byte {
	b := make([]byte, headerLen, headerLen+len(payload))
	copy(b, magic)
	if parent != nil {
		b[2] = 1
		copy(b[3:], parent[:])
	}
	binary.LittleEndian.PutUint32(b[3+prefix.Size:], crc32.Checksum(payload, castagnoli))
	return append(b, payload...)
}

// Verify is a store.Options.Verify for the fake format: it checks the magic
// and the checksum and returns the parent.
func Verify(block []byte) (parent prefix.Key, hasParent bool, err error) {
	if len(block) < headerLen || !bytes.Equal(block[:2], magic) {
		return parent, false, fmt.Errorf("%w: bad header", ErrBadBlock)
	}
	payload := block[headerLen:]
	if crc32.Checksum(payload, castagnoli) != binary.LittleEndian.Uint32(block[3+prefix.Size:]) {
		return parent, false, fmt.Errorf("%w: checksum mismatch", ErrBadBlock)
	}
	copy(parent[:], block[3:])
	return parent, block[2] == 1, nil
}

// Key returns a deterministic, non-zero key for name.
func Key(name string) prefix.Key { return prefix.Key(sha256.Sum256([]byte("key/" + name))) }

// Namespace returns a deterministic, non-zero namespace for name.
func Namespace(name string) prefix.Namespace {
	return prefix.Namespace(sha256.Sum256([]byte("ns/" + name)))
}

// Payload returns n deterministic bytes derived from seed.
func Payload(seed string, n int) []byte {
	out := make([]byte, 0, n+sha256.Size)
	h := sha256.Sum256([]byte(seed))
	for len(out) < n {
		out = append(out, h[:]...)
		h = sha256.Sum256(h[:])
	}
	return out[:n]
}
