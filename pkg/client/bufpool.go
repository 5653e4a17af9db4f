package client

import (
	"math/bits"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
)

// recvPool is the buffer pool of the client's connections. grpc's default
// pool clears every buffer it hands out, over its whole capacity; that is
// a memclr of every received byte (and more: a frame lands in the next
// larger tier), which profiles of Get showed as a tenth of the client's
// CPU. The transport fills a buffer before anyone reads it, so clearing
// buys nothing.
var recvPool = newDirtyPool()

// transportDialOptions are the client's transport-level dial options.
func transportDialOptions() []grpc.DialOption {
	return []grpc.DialOption{experimental.WithBufferPool(recvPool)}
}

const (
	minPoolShift = 8  // 256 B
	maxPoolShift = 22 // 4 MiB
)

// dirtyPool is a mem.BufferPool of power-of-two tiers that does not clear
// buffers.
type dirtyPool struct {
	tiers [maxPoolShift + 1]sync.Pool
}

func newDirtyPool() *dirtyPool { return &dirtyPool{} }

func tierOf(n int) int {
	if n <= 1<<minPoolShift {
		return minPoolShift
	}
	return bits.Len(uint(n - 1))
}

func (p *dirtyPool) Get(n int) *[]byte {
	t := tierOf(n)
	if t > maxPoolShift {
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

func (p *dirtyPool) Put(bp *[]byte) {
	c := cap(*bp)
	if c < 1<<minPoolShift || c&(c-1) != 0 || c > 1<<maxPoolShift {
		return
	}
	*bp = (*bp)[:0]
	p.tiers[bits.Len(uint(c))-1].Put(bp)
}
