package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// fixedPicker puts every key on the same owners, in order.
type fixedPicker []string

func (p fixedPicker) Owners(_ prefix.Key, dst []string) []string { return append(dst[:0], p...) }

// A preferred owner that accepts connections and never answers (a dead
// host whose address drops packets) must cost a hedge delay, not the
// caller's deadline, as long as another owner has the blocks.
func TestStalledOwnerIsHedged(t *testing.T) {
	_, addrs := testnode.Cluster(t, 1, cachenode.Config{})
	ns := prefix.Namespace{31}
	blocks, _ := chain(t, ns, 4, 31)
	keys := keysOf(blocks)
	seed, err := client.New(client.Config{Nodes: addrs, Replicas: 1, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	if err := seed.Put(ctxT(t), ns, blocks); err != nil {
		t.Fatal(err)
	}
	stalled := blackhole(t)

	for _, tc := range []struct {
		name  string
		hedge time.Duration
		want  int
	}{
		{"hedged", 30 * time.Millisecond, len(keys)},
		{"not hedged", -1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New(client.Config{Picker: fixedPicker{stalled, addrs[0]}, HedgeAfter: tc.hedge,
				CallTimeout: 5 * time.Second, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The worker's budget: a lookup gets 300ms.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			n, err := c.Lookup(ctx, ns, keys)
			if tc.want == 0 {
				if err == nil && n != 0 {
					t.Fatalf("Lookup without hedging = %d, want a miss", n)
				}
				return
			}
			if err != nil || n != tc.want {
				t.Fatalf("Lookup = %d, %v after %v; want %d", n, err, time.Since(start), tc.want)
			}
			fctx, fcancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer fcancel()
			raw, err := c.FetchRaw(fctx, ns, keys, nil)
			if err != nil || len(raw) != len(keys) {
				t.Fatalf("FetchRaw = %d blocks, %v; want %d", len(raw), err, len(keys))
			}
			for i := range raw {
				if string(raw[i]) != string(blocks[i].Data) {
					t.Fatalf("block %d differs", i)
				}
			}
		})
	}
}
