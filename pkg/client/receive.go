package client

import (
	"errors"
	"log/slog"
	"sync"

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
	// pub, when set, takes each verified block as it completes
	// (FetchRawFunc); node is where the blocks come from.
	pub  *stream
	node string

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
	if bs.pub != nil && bs.pub.publish(i, bs.got[i]) {
		bs.got[i] = nil // the stream's now: never read into again
	}
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

// stream is where the calls of a FetchRawFunc publish verified blocks as
// they complete, and where its caller waits for them in order.
type stream struct {
	mu     sync.Mutex
	cond   sync.Cond
	got    [][]byte // by key index: the first verified copy, until handed over
	have   []bool   // by key index: a copy was taken
	done   bool     // the fetch has returned
	err    error    // and failed so
	waitAt int      // the key the caller waits for, or -1
}

func newStream(n int) *stream {
	s := &stream{got: make([][]byte, n), have: make([]bool, n), waitAt: -1}
	s.cond.L = &s.mu
	return s
}

// publish offers block i and reports whether the stream took it (it had
// no copy yet). A block taken belongs to the stream's caller.
func (s *stream) publish(i int, b []byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.have[i] || s.done {
		return false
	}
	s.got[i], s.have[i] = b, true
	if s.waitAt == i {
		s.cond.Signal()
	}
	return true
}

// finish records that the fetch returned, with its error.
func (s *stream) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done, s.err = true, err
	s.cond.Signal()
}

// wait returns block i once it is published, or nil and the fetch's error
// once the fetch has returned without it (i >= the key count: waits for
// the fetch to return).
func (s *stream) wait(i int) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if i < len(s.got) && s.have[i] {
			b := s.got[i]
			s.got[i] = nil // handed over: the stream keeps no reference
			return b, nil
		}
		if s.done {
			return nil, s.err
		}
		s.waitAt = i
		s.cond.Wait()
		s.waitAt = -1
	}
}
