package grpcmem

import "testing"

func TestDirtyPool(t *testing.T) {
	p := NewDirtyPool()
	for _, n := range []int{0, 1, 255, 256, 257, 4096, 16384, 16389, 1 << 20, 4 << 20, 5 << 20} {
		for range 3 {
			b := p.Get(n)
			if len(*b) != n {
				t.Fatalf("Get(%d) has length %d", n, len(*b))
			}
			if c := cap(*b); n <= 4<<20 && (c&(c-1) != 0 || c < n) {
				t.Fatalf("Get(%d) has capacity %d, want the power of two tier", n, c)
			}
			p.Put(b)
		}
	}
	odd := make([]byte, 1000)
	p.Put(&odd) // not from the pool: dropped, no panic
}
