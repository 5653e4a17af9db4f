// Package grpcmem holds the gRPC buffer pool shared by the kvcache client
// and server transports.
package grpcmem

import (
	"math/bits"
	"sync"
)

// DirtyPool is a grpc mem.BufferPool of power-of-two tiers (256 B to
// 4 MiB) that, unlike grpc's default pool, does not clear the buffers it
// hands out. grpc clears a reused buffer over its whole capacity, which is a
// memclr of every byte received (profiles of Get and Put showed 8-10% of
// CPU); the transport fills a buffer before anything reads it, so clearing
// buys nothing. Larger requests are allocated and not pooled.
type DirtyPool struct {
	tiers [maxShift + 1]sync.Pool
}

const (
	minShift = 8  // 256 B
	maxShift = 22 // 4 MiB
)

// NewDirtyPool returns an empty pool.
func NewDirtyPool() *DirtyPool { return &DirtyPool{} }

func tierOf(n int) int {
	if n <= 1<<minShift {
		return minShift
	}
	return bits.Len(uint(n - 1))
}

// Get returns a buffer of length n with unspecified contents.
func (p *DirtyPool) Get(n int) *[]byte {
	t := tierOf(n)
	if t > maxShift {
		b := make([]byte, n)
		return &b
	}
	if bp, ok := p.tiers[t].Get().(*[]byte); ok {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<t)
	return &b
}

// Put returns a buffer obtained from Get; others are dropped.
func (p *DirtyPool) Put(bp *[]byte) {
	c := cap(*bp)
	if c < 1<<minShift || c&(c-1) != 0 || c > 1<<maxShift {
		return
	}
	*bp = (*bp)[:0]
	p.tiers[bits.Len(uint(c))-1].Put(bp)
}
