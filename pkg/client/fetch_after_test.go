package client_test

import (
	"bytes"
	"testing"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// FetchRawAfter fetches the rest of a chain after a known parent, and
// only that: block 0 of the suffix must name the parent, so a chain's
// start, another chain's block, or a wrong parent is not a hit.
func TestFetchRawAfter(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: addrs})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := ctxT(t)
	ns := prefix.Namespace{2}
	blocks, _ := chain(t, ns, 6, 3)
	other, _ := chain(t, ns, 2, 4)
	if err := c.Put(ctx, ns, append(blocks, other...)); err != nil {
		t.Fatal(err)
	}
	keys := keysOf(blocks)
	tests := []struct {
		name   string
		parent prefix.Key
		from   int // keys[from:to] are asked for
		to     int
		want   int
	}{
		{"the suffix after block 2", keys[2], 3, 6, 3},
		{"one block after the first", keys[0], 1, 2, 1},
		{"a chain's first block has no parent", keys[0], 0, 3, 0},
		{"the wrong parent", keys[1], 3, 6, 0},
		{"another chain's parent", other[1].Key, 2, 6, 0},
		{"nothing asked", keys[0], 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.FetchRawAfter(ctx, ns, tt.parent, keys[tt.from:tt.to], nil)
			if err != nil || len(got) != tt.want {
				t.Fatalf("FetchRawAfter = %d blocks, %v; want %d", len(got), err, tt.want)
			}
			for i, b := range got {
				if j := tt.from + i; !bytes.Equal(b, blocks[j].Data) {
					t.Fatalf("block %d is not block %d", i, j)
				}
			}
		})
	}
	if got, err := c.FetchRaw(ctx, ns, keys[3:], nil); err != nil || len(got) != 0 {
		t.Fatalf("FetchRaw of a suffix = %d blocks, %v; want 0 (its first block has a parent)", len(got), err)
	}
}
