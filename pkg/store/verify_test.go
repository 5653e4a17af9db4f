package store_test

import (
	"errors"
	"testing"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// TestDefaultVerify checks that, without Options.Verify, Put runs the codec's
// check, passes its errors through with their identity and learns the
// parent from the header.
func TestDefaultVerify(t *testing.T) {
	ns, parent, child := storetest.Namespace("v"), storetest.Key("p"), storetest.Key("c")
	shape := kvblock.Shape{Tokens: 4, Layers: 2, KVHeads: 2, HeadDim: 8}
	kv := &kvblock.KV{Shape: shape, K: make([]float32, shape.Elements()), V: make([]float32, shape.Elements())}
	encode := func(m kvblock.Meta) []byte {
		b, err := kvblock.Encode(nil, kv, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	size := len(encode(kvblock.Meta{Codec: kvblock.Int8}))
	s := store.NewMemory(&store.Options{Capacity: int64(2 * size)})
	defer s.Close()
	if _, err := s.Put(ctx, ns, parent, encode(kvblock.Meta{Codec: kvblock.Int8})); err != nil {
		t.Fatalf("Put(valid block): %v", err)
	}
	b := encode(kvblock.Meta{Codec: kvblock.Int8, Parent: parent, HasParent: true})
	if _, err := s.Put(ctx, ns, child, b); err != nil {
		t.Fatalf("Put(valid child): %v", err)
	}
	// The store is full. The parent is older but pinned by its child, which
	// only holds if the header's parent reached the index: the child goes.
	if _, err := s.Put(ctx, ns, storetest.Key("other"), encode(kvblock.Meta{Codec: kvblock.Int8})); err != nil {
		t.Fatal(err)
	}
	if found, _ := s.Contains(ctx, ns, []prefix.Key{parent, child}); !found[0] || found[1] {
		t.Errorf("present [parent child] = %v, want [true false]", found)
	}
	if _, err := s.Put(ctx, ns, storetest.Key("junk"), []byte("not a block")); !errors.Is(err, kvblock.ErrInvalid) {
		t.Errorf("Put(junk) err = %v, want kvblock.ErrInvalid", err)
	}
	b = append([]byte(nil), b...)
	b[len(b)-1] ^= 0xff
	if _, err := s.Put(ctx, ns, storetest.Key("corrupt"), b); !errors.Is(err, kvblock.ErrChecksum) {
		t.Errorf("Put(corrupt) err = %v, want kvblock.ErrChecksum", err)
	}
	if st := s.Stats(); st.Blocks != 2 {
		t.Errorf("Blocks = %d, want 2", st.Blocks)
	}
}
