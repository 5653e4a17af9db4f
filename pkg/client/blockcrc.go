package client

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/kvcache/kvcache/pkg/kvblock"
)

// The block checksum (docs/block-format.md) is the CRC32C of header bytes
// [0,60) followed by the payload; bytes [60,64) hold it, little-endian.
// getStream computes it incrementally as a block arrives; a test checks
// it against kvblock.Inspect.
const crcField = 60

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// updateBlockCRC extends crc with p, which sits at offset off of its block,
// skipping the checksum field.
func updateBlockCRC(crc uint32, off int, p []byte) uint32 {
	end := off + len(p)
	if off < kvblock.HeaderSize && end > crcField {
		a := max(crcField-off, 0)
		b := min(kvblock.HeaderSize-off, len(p))
		crc = crc32.Update(crc, castagnoli, p[:a])
		return crc32.Update(crc, castagnoli, p[b:])
	}
	return crc32.Update(crc, castagnoli, p)
}

// headerCRC is the checksum a block's header claims, or a value no block
// sums to when block is too short to have one.
func headerCRC(block []byte) uint32 {
	if len(block) < kvblock.HeaderSize {
		return 0
	}
	return binary.LittleEndian.Uint32(block[crcField:])
}
