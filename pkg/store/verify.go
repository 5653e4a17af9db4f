package store

import (
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// verifyKVBlock is the default Options.Verify: the codec's own check of the
// header and the payload's CRC32C. Its errors wrap kvblock.ErrInvalid,
// kvblock.ErrUnsupported or kvblock.ErrChecksum, and Put passes them on
// wrapped, so callers can tell a corrupt block from a bad request.
func verifyKVBlock(block []byte) (prefix.Key, bool, error) {
	h, err := kvblock.Inspect(block)
	if err != nil {
		return prefix.Key{}, false, err
	}
	return h.Parent, h.HasParent, nil
}
