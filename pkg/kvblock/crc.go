package kvblock

import "hash/crc32"

// CRC32C combination, so that Encode can checksum each payload section
// right after writing it, while it is still in cache, and stitch the
// per-section CRCs together in format order (header bytes [0,60), then the
// payload sections) at the end. The arithmetic is zlib's crc32_combine:
// polynomials over GF(2) in CRC32C's reflected bit order (the x^0
// coefficient in bit 31).

const castagnoliPoly = 0x82f63b78 // reflected crc32.Castagnoli

// multModP returns a*b modulo the CRC32C polynomial.
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ castagnoliPoly
		} else {
			b >>= 1
		}
	}
	return p
}

// x2nTable[k] is x^(2^k) modulo the CRC32C polynomial.
var x2nTable = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = multModP(p, p)
	}
	return t
}()

// xPow8n returns x^(8n) modulo the CRC32C polynomial: appending n bytes
// multiplies a CRC's contribution by it.
func xPow8n(n int) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multModP(x2nTable[k&31], p)
		}
	}
	return p
}

// crc32cCombine returns the CRC32C of a||b given crc1 = CRC32C(a),
// crc2 = CRC32C(b) and n = len(b).
func crc32cCombine(crc1, crc2 uint32, n int) uint32 {
	if n == 0 {
		return crc1
	}
	return multModP(xPow8n(n), crc1) ^ crc2
}

// crcUpdate is crc32.Update with the CRC32C table.
func crcUpdate(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }
