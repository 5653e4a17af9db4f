// Package prefix derives cache namespaces and chained block keys.
//
// A namespace is a 32-byte digest of everything that makes KV from two
// engines incompatible. Block i of a token sequence covers tokens
// [i*B, (i+1)*B) and its key chains all blocks before it:
//
//	h_{-1} = namespace
//	h_i    = SHA-256(h_{i-1} || tokens_i as little-endian uint32)
//
// so equal keys imply equal prefixes under equal model settings. Only full
// blocks are keyed. The byte-exact specification, with test vectors, is
// docs/keys.md; this package is its reference implementation.
package prefix

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
)

// Size is the length in bytes of a namespace and of a key.
const Size = 32

// Key identifies one block: the chained hash of its tokens and all before it.
type Key [Size]byte

// Namespace identifies a KV-compatibility class (model, shape, block size,
// tenant). It is the root h_{-1} of every key chain.
type Namespace [Size]byte

// String returns the key in lower-case hex.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// String returns the namespace in lower-case hex.
func (n Namespace) String() string { return hex.EncodeToString(n[:]) }

// ErrLength reports a key or namespace that is not Size bytes long.
var ErrLength = errors.New("prefix: wrong length, want 32 bytes")

// KeyFromBytes copies b into a Key. It fails with ErrLength unless len(b) == Size.
func KeyFromBytes(b []byte) (Key, error) {
	var k Key
	if len(b) != Size {
		return k, fmt.Errorf("key of %d bytes: %w", len(b), ErrLength)
	}
	copy(k[:], b)
	return k, nil
}

// NamespaceFromBytes copies b into a Namespace. It fails with ErrLength
// unless len(b) == Size.
func NamespaceFromBytes(b []byte) (Namespace, error) {
	var n Namespace
	if len(b) != Size {
		return n, fmt.Errorf("namespace of %d bytes: %w", len(b), ErrLength)
	}
	copy(n[:], b)
	return n, nil
}

// ParseKey decodes a 64-character hex string.
func ParseKey(s string) (Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("prefix: parse key: %w", err)
	}
	return KeyFromBytes(b)
}

// ParseNamespace decodes a 64-character hex string.
func ParseNamespace(s string) (Namespace, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return Namespace{}, fmt.Errorf("prefix: parse namespace: %w", err)
	}
	return NamespaceFromBytes(b)
}

// Next returns the key of the block that follows parent and holds tokens.
// For the first block of a sequence, parent is the namespace as a Key.
func Next(parent Key, tokens []uint32) Key {
	h := sha256.New()
	h.Write(parent[:])
	var buf [4 * 64]byte
	for len(tokens) > 0 {
		n := min(len(tokens), len(buf)/4)
		for i, t := range tokens[:n] {
			binary.LittleEndian.PutUint32(buf[4*i:], t)
		}
		h.Write(buf[:4*n])
		tokens = tokens[n:]
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// Root returns the namespace as the parent of block 0.
func (n Namespace) Root() Key { return Key(n) }

// BlockKeys returns the keys of every full block of tokens, blockTokens
// tokens each. A trailing partial block has no key. It panics if
// blockTokens < 1, which is a programming error.
func BlockKeys(ns Namespace, tokens []uint32, blockTokens int) []Key {
	if blockTokens < 1 {
		panic("prefix: blockTokens < 1")
	}
	n := len(tokens) / blockTokens
	keys := make([]Key, n)
	parent := ns.Root()
	for i := range n {
		parent = Next(parent, tokens[i*blockTokens:(i+1)*blockTokens])
		keys[i] = parent
	}
	return keys
}
