package server

import (
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
)

// Block assembly memory. A block being received reserves, from one budget
// shared by every Put stream of the server, the capacity of the buffer it
// holds, and that buffer grows with what has arrived (doubling, so at most
// twice the bytes received, and never past the announced size): a client
// announcing 64 MiB blocks and sending little costs little, and one
// sending the data costs at most the budget.
//
// Buffers are pooled per power-of-two size class so that a reused buffer
// is never much bigger than the block it serves (a single pool would hand
// a 64 MiB buffer to a 25 KiB block and reserve all of it).
const (
	minClass = 12 // 4 KiB
	maxClass = 27 // 128 MiB
)

type bufPools [maxClass + 1]sync.Pool

// budget is the assembly budget: bytes reserved by blocks being received.
type budget struct {
	limit int64
	used  atomic.Int64
}

// err reports an exhausted assembly budget.
func (b *budget) err(want int) error {
	return fmt.Errorf("%w: assembly budget exhausted (%d of %d bytes held by blocks being received, %d more needed); retry later",
		errBusy, b.used.Load(), b.limit, want)
}

func (b *budget) reserve(n int) bool {
	if b.used.Add(int64(n)) > b.limit {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *budget) release(n int) { b.used.Add(-int64(n)) }

// getBlockBuf returns an empty buffer with capacity for need bytes, of its size
// class or exactly limit when the class would be bigger, reserving its
// capacity; nil when the budget has no room.
func (s *Server) getBlockBuf(need, limit int) *[]byte {
	k := max(bits.Len(uint(max(need, 1)-1)), minClass)
	size := 1 << k
	var bp *[]byte
	if size > limit || k > maxClass {
		size = limit
	} else if v, _ := s.pools[k].Get().(*[]byte); v != nil {
		bp = v
	}
	if bp == nil {
		bp = new([]byte)
	}
	c := max(cap(*bp), size)
	if !s.budget.reserve(c) {
		s.putBlockBuf(bp, false)
		return nil
	}
	if cap(*bp) < size {
		*bp = make([]byte, 0, size)
	}
	*bp = (*bp)[:0]
	return bp
}

// putBlockBuf returns a buffer to its pool, releasing its reservation
// when reserved.
func (s *Server) putBlockBuf(bp *[]byte, reserved bool) {
	if bp == nil {
		return
	}
	c := cap(*bp)
	if reserved {
		s.budget.release(c)
	}
	if k := bits.Len(uint(c)) - 1; c > 0 && k >= minClass && k <= maxClass {
		s.pools[k].Put(bp)
	}
}

// growBlockBuf makes room in bp for need bytes (need <= limit), moving its
// contents to a bigger buffer; false when the budget has no room.
func (s *Server) growBlockBuf(bp *[]byte, need, limit int) bool {
	if need <= cap(*bp) {
		return true
	}
	nb := s.getBlockBuf(min(max(need, 2*cap(*bp)), limit), limit)
	if nb == nil {
		return false
	}
	*nb = append(*nb, *bp...)
	old := *bp
	s.putBlockBuf(&old, true)
	*bp = *nb
	return true
}
