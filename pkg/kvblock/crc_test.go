package kvblock

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

func TestCRC32CCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 1<<20+77)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	sizes := []int{0, 1, 2, 3, 7, 8, 60, 64, 255, 4096, 65537, len(buf)}
	for i := 0; i < 300; i++ {
		sizes = append(sizes, rng.IntN(len(buf)+1))
	}
	for _, n := range sizes {
		b := buf[:n]
		want := crc32.Checksum(b, castagnoli)
		// Two-way split.
		k := 0
		if n > 0 {
			k = rng.IntN(n + 1)
		}
		got := crc32cCombine(crc32.Checksum(b[:k], castagnoli), crc32.Checksum(b[k:], castagnoli), n-k)
		if got != want {
			t.Fatalf("n=%d split %d: combine %08x, want %08x", n, k, got, want)
		}
		// Many pieces, combined left to right.
		var c uint32
		for rest := b; len(rest) > 0; {
			m := min(len(rest), 1+rng.IntN(1+len(rest)/3))
			c = crc32cCombine(c, crc32.Checksum(rest[:m], castagnoli), m)
			rest = rest[m:]
		}
		if c != want {
			t.Fatalf("n=%d pieces: combine %08x, want %08x", n, c, want)
		}
	}
}
