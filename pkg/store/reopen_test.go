package store_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// writeRaw adds a block to a closed store file the way a node from before
// ErrInvalidParent could have: with any parent link, in format-1 metadata.
func writeRaw(t *testing.T, path string, ns prefix.Namespace, key, parent prefix.Key, block []byte) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	id := append(append([]byte(nil), ns[:]...), key[:]...)
	meta := make([]byte, 50)
	meta[0], meta[1] = 1, 1
	binary.LittleEndian.PutUint64(meta[2:], uint64(len(block)))
	binary.LittleEndian.PutUint64(meta[10:], 1)
	copy(meta[18:], parent[:])
	if err := b.Update(func(tx *bbolt.Tx) error {
		nb, err := tx.Bucket([]byte("blocks")).CreateBucket(id)
		if err != nil {
			return err
		}
		if err := nb.Put([]byte("v"), block); err != nil {
			return err
		}
		return tx.Bucket([]byte("meta")).Put(id, meta)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDBReopenUnlocksSelfParentsAndCycles: blocks written by an older node
// that name themselves as parent, or form a cycle, were never evictable and
// left the store answering "full" forever, also after a restart. Reopened,
// they are evictable and new blocks go in.
func TestDBReopenUnlocksSelfParentsAndCycles(t *testing.T) {
	const size = 100
	blk := storetest.Block(nil, storetest.Payload("x", size))
	opts := &store.Options{Verify: storetest.Verify, Capacity: int64(3 * len(blk)), AccessFlushInterval: -1}
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	ns := storetest.Namespace("a")
	self, x, y := storetest.Key("self"), storetest.Key("x"), storetest.Key("y")
	writeRaw(t, path, ns, self, self, storetest.Block(&self, storetest.Payload("s", size)))
	writeRaw(t, path, ns, x, y, storetest.Block(&y, storetest.Payload("x", size)))
	writeRaw(t, path, ns, y, x, storetest.Block(&x, storetest.Payload("y", size)))

	db, err = store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if st := db.Stats(); st.Blocks != 3 {
		t.Fatalf("reopened with %d blocks, want 3", st.Blocks)
	}
	for i := range 3 {
		k := storetest.Key(fmt.Sprint("new", i))
		if _, err := db.Put(ctx, ns, k, storetest.Block(nil, storetest.Payload(k.String(), size))); err != nil {
			t.Fatalf("Put %d into a store of self-parents and cycles: %v", i, err)
		}
	}
	if found, _ := db.Contains(ctx, ns, []prefix.Key{self, x, y}); fmt.Sprint(found) != "[false false false]" {
		t.Errorf("old blocks present %v, want all evicted", found)
	}
}

// TestDBTenantLabelsSurviveReopen: labels are kept with the blocks, so a
// quota configured at a restart applies to blocks stored before it.
func TestDBTenantLabelsSurviveReopen(t *testing.T) {
	const size = 100
	blkLen := int64(len(storetest.Block(nil, storetest.Payload("x", size))))
	opts := &store.Options{Verify: storetest.Verify, AccessFlushInterval: -1}
	db, path := openDB(t, opts)
	ns := storetest.Namespace("a")
	ta := store.WithTenant(ctx, "tenant-a")
	var keys []prefix.Key
	for i := range 3 {
		k := storetest.Key(fmt.Sprint("a", i))
		keys = append(keys, k)
		if _, err := db.Put(ta, ns, k, storetest.Block(nil, storetest.Payload(k.String(), size))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.Put(ctx, ns, storetest.Key("free"), storetest.Block(nil, storetest.Payload("free", size))); err != nil {
		t.Fatal(err)
	}
	db.Close()

	opts.Quotas = map[string]int64{"tenant-a": 2 * blkLen}
	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if u := db.Stats().Tenants["tenant-a"]; u.Blocks != 3 || u.BytesUsed != 3*blkLen || u.Quota != 2*blkLen {
		t.Fatalf("tenant usage after reopen %+v; want 3 blocks over a quota of 2", u)
	}
	k := storetest.Key("a3")
	if _, err := db.Put(ta, ns, k, storetest.Block(nil, storetest.Payload(k.String(), size))); err != nil {
		t.Fatal(err)
	}
	found, _ := db.Contains(ctx, ns, append(keys, k, storetest.Key("free")))
	if fmt.Sprint(found) != "[false false true true true]" {
		t.Errorf("present %v; want the tenant's two oldest evicted, the unlabelled block kept", found)
	}
	big := storetest.Block(nil, storetest.Payload("big", int(3*blkLen)))
	if _, err := db.Put(ta, ns, storetest.Key("big"), big); !errors.Is(err, store.ErrQuota) {
		t.Errorf("Put over the quota: %v, want ErrQuota", err)
	}
}
