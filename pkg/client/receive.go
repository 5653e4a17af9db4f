package client

import (
	"errors"
	"log/slog"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// blockSet receives the blocks of one call to one node, keys[idx[j]] into
// got[idx[j]], whichever transport carries them (fetch_grpc.go,
// dataplane.go). Each block is checksummed piece by piece as it is copied
// in, while the bytes are still in cache (a second pass over a block costs
// a fifth of a fetch), and verified once, in end: the only place a fetched
// block's header is parsed and its parent checked.
type blockSet struct {
	keys []prefix.Key // the request's keys
	// chained: keys are consecutive blocks of one prompt, so block i must
	// be the child of keys[i-1] (false for a lone block, as read repair
	// copies one whose chain its first read checked).
	chained bool
	// parent, when set, is the key before keys[0] in the chain: block 0
	// must name it as parent (FetchRawAfter). Nil: block 0 starts it.
	parent *prefix.Key
	idx    []int
	got    [][]byte         // by key index; buffers are reused
	hdr    []kvblock.Header // by key index, valid where ok
	ok     []bool           // by key index: received whole and verified
	// wrong, by key index: received whole and intact but not the block
	// of its key (bad header or parent). Unlike a missing or damaged
	// block it is not a miss: no read repair is scheduled for it.
	wrong []bool
	log   *slog.Logger
	prog  *progress

	cur int // key index of the block being received, or -1
	sum kvblock.Checksum
}

func newBlockSet(keys []prefix.Key, idx []int, chained bool, log *slog.Logger, prog *progress) *blockSet {
	return &blockSet{
		keys: keys, chained: chained, idx: idx, log: log, prog: prog, cur: -1,
		got: make([][]byte, len(keys)), hdr: make([]kvblock.Header, len(keys)), ok: make([]bool, len(keys)),
		wrong: make([]bool, len(keys)),
	}
}

// lend lets block i reuse buf's capacity.
func (bs *blockSet) lend(i int, buf []byte) { bs.got[i] = buf[:0] }

// requested returns the keys asked for, in request order.
func (bs *blockSet) requested() []prefix.Key {
	out := make([]prefix.Key, len(bs.idx))
	for j, i := range bs.idx {
		out[j] = bs.keys[i]
	}
	return out
}

// begin starts block j of the request, of size bytes, and returns its
// buffer (len size).
func (bs *blockSet) begin(j, size int) []byte {
	i := bs.idx[j]
	if cap(bs.got[i]) < size {
		bs.got[i] = make([]byte, size)
	}
	bs.got[i] = bs.got[i][:size]
	bs.ok[i], bs.wrong[i] = false, false
	bs.cur = i
	bs.sum.Reset()
	return bs.got[i]
}

// write takes the next bytes of the current block, already in its buffer.
func (bs *blockSet) write(p []byte) {
	bs.sum.Write(p)
	bs.prog.note()
}

// end verifies block j once it is complete. A block is a hit only if its
// header is valid, its checksum matches, and it sits where the chain says:
// its parent is the previous key (and only the first block has none), so
// a block stored under the wrong key is never served, and a caller that
// imports it (the worker) need not check its position again.
func (bs *blockSet) end(j int) {
	bs.prog.note()
	i := bs.idx[j]
	bs.cur = -1
	h, err := kvblock.VerifySum(bs.got[i], bs.sum.Sum32())
	switch {
	case errors.Is(err, kvblock.ErrChecksum):
		bs.log.Warn("fetched block failed its checksum", "key", bs.keys[i].String())
		return
	case err != nil:
		bs.log.Warn("fetched block failed verification", "key", bs.keys[i].String(), "err", err)
		bs.wrong[i] = true
		return
	case bs.chained && !bs.inChain(i, &h):
		bs.log.Warn("fetched block has the wrong parent", "key", bs.keys[i].String())
		bs.wrong[i] = true
		return
	}
	bs.hdr[i], bs.ok[i] = h, true
}

// inChain reports whether block i's header names the parent the chain
// wants: keys[i-1], or for block 0 bs.parent (none when nil).
func (bs *blockSet) inChain(i int, h *kvblock.Header) bool {
	switch {
	case i > 0:
		return h.HasParent && h.Parent == bs.keys[i-1]
	case bs.parent != nil:
		return h.HasParent && h.Parent == *bs.parent
	default:
		return !h.HasParent
	}
}

// reset forgets every block of the request, before another transport
// delivers them again.
func (bs *blockSet) reset() {
	for _, i := range bs.idx {
		bs.ok[i], bs.wrong[i] = false, false
	}
	bs.cur = -1
}
