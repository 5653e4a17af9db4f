package kvblock

import "fmt"

// crcField is the offset of the checksum in the header: the checksum
// covers header bytes [0, crcField) and the payload.
const crcField = 60

// Checksum is a block's CRC32C computed incrementally, as a block's bytes
// arrive in order. A reader that streams a block in (the client fetching
// one) feeds every piece right after it lands, while it is still in cache,
// and then checks the result with VerifySum instead of making a second
// pass over the block. It skips the checksum field itself, as the format
// requires. The zero value is ready for the first byte of a block.
type Checksum struct {
	crc uint32
	n   int // bytes of the block seen so far
}

// Reset starts over for a new block.
func (c *Checksum) Reset() { *c = Checksum{} }

// Write adds the next bytes of the block.
func (c *Checksum) Write(p []byte) {
	off := c.n
	c.n += len(p)
	if off < HeaderSize && c.n > crcField {
		a := max(crcField-off, 0)
		b := min(HeaderSize-off, len(p))
		c.crc = crcUpdate(c.crc, p[:a])
		c.crc = crcUpdate(c.crc, p[b:])
		return
	}
	c.crc = crcUpdate(c.crc, p)
}

// Sum32 is the checksum of the bytes written so far.
func (c *Checksum) Sum32() uint32 { return c.crc }

// VerifySum is Inspect for a block whose checksum the caller computed
// while receiving it (with Checksum): it parses and validates the header
// and compares sum with the checksum the header claims, without reading
// the payload again.
func VerifySum(block []byte, sum uint32) (Header, error) {
	h, err := ParseHeader(block)
	if err != nil {
		return h, err
	}
	if sum != h.CRC {
		return h, fmt.Errorf("crc32c %08x, header says %08x: %w", sum, h.CRC, ErrChecksum)
	}
	return h, nil
}
