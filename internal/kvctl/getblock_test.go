package kvctl_test

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// TestGetAnyBlockOfAChain: kvctl get finds every stored block by its key,
// not only a chain's first block, and prints its parent.
func TestGetAnyBlockOfAChain(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	c, err := client.New(client.Config{Nodes: []string{n.Addr()}, CallTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ns := prefix.Namespace(sha256.Sum256([]byte("chain ns")))
	shape := kvblock.Shape{Tokens: 16, Layers: 2, KVHeads: 2, HeadDim: 8}
	var keys []prefix.Key
	var blocks []client.Block
	for i := range 3 {
		kv := kvblock.KV{Shape: shape, K: make([]float32, shape.Elements()), V: make([]float32, shape.Elements())}
		for j := range kv.K {
			kv.K[j], kv.V[j] = float32(i+j%7)/8, -float32(j%5)/4
		}
		m := kvblock.Meta{Codec: kvblock.Int8, StartPos: uint32(16 * i), Sinks: -1}
		if i > 0 {
			m.Parent, m.HasParent = keys[i-1], true
		}
		data, err := kvblock.Encode(nil, &kv, m)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, prefix.Key(sha256.Sum256([]byte{byte(i)})))
		blocks = append(blocks, client.Block{Key: keys[i], Data: data})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Put(ctx, ns, blocks); err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		out, err := run(t, "get", "--nodes", n.Addr(), "--ns", ns.String(), "--key", k.String())
		if err != nil {
			t.Fatalf("get block %d: %v\n%s", i, err, out)
		}
		if want := "positions  " + map[int]string{0: "0..15", 1: "16..31", 2: "32..47"}[i]; !strings.Contains(out, want) {
			t.Errorf("get block %d: no %q in\n%s", i, want, out)
		}
		if i > 0 && !strings.Contains(out, "parent     "+keys[i-1].String()) {
			t.Errorf("get block %d: parent %s not printed:\n%s", i, keys[i-1], out)
		}
	}
}
