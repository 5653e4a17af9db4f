package store_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// TestDBPipelinedCommit holds one shard's commit after its transaction
// (fsync included) has returned, in the hook that runs before any ack:
// its Put must not be acknowledged nor visible meanwhile, and another Put
// must commit through the other shard (batch N+1 is written while batch N
// is in its sync). Released, the first Put is acknowledged and present.
func TestDBPipelinedCommit(t *testing.T) {
	held := make(chan int, 1)
	release := make(chan struct{})
	var calls atomic.Int32
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := store.OpenCommitHook(path, &store.Options{Verify: storetest.Verify}, func(shard int) {
		if calls.Add(1) == 1 {
			held <- shard
			<-release
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Error(err)
		}
		for _, f := range store.Files(path) {
			checkFile(t, f)
		}
	})
	ns := storetest.Namespace("pipe")
	ka, kb := storetest.Key("a"), storetest.Key("b")
	ba := storetest.Block(nil, storetest.Payload("a", 4096))
	type result struct {
		stored bool
		err    error
	}
	aDone := make(chan result, 1)
	go func() {
		stored, err := db.Put(ctx, ns, ka, ba)
		aDone <- result{stored, err}
	}()
	select {
	case <-held:
	case <-time.After(time.Minute):
		t.Fatal("the first commit never reached the hook")
	}

	// The other shard is free: a Put completes while the first is held.
	bctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if stored, err := db.Put(bctx, ns, kb, storetest.Block(nil, storetest.Payload("b", 4096))); err != nil || !stored {
		t.Fatalf("Put b while a's commit is held = %v, %v; want it committed by the other shard", stored, err)
	}
	select {
	case r := <-aDone:
		t.Fatalf("Put a returned %v, %v before its commit's hook returned", r.stored, r.err)
	default:
	}
	if got := present(t, db, ns, ka, kb); got != "[false true]" {
		t.Errorf("while a's commit is held, present = %s; want [false true]", got)
	}

	close(release)
	r := <-aDone
	if r.err != nil || !r.stored {
		t.Fatalf("Put a = %v, %v; want true, nil", r.stored, r.err)
	}
	if got := present(t, db, ns, ka, kb); got != "[true true]" {
		t.Errorf("after the release, present = %s; want [true true]", got)
	}
	if got, err := db.Get(ctx, ns, ka, nil); err != nil || !bytes.Equal(got, ba) {
		t.Errorf("Get a = %v", err)
	}
}

func present(t *testing.T, db *store.DB, ns prefix.Namespace, keys ...prefix.Key) string {
	t.Helper()
	found, err := db.Contains(ctx, ns, keys)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(found)
}

// TestDBEvictAcrossShardsReopen fills a store to twice its capacity from
// concurrent writers, so batches of one shard evict blocks of the other
// (deferred to that shard's next commit), then checks that a reopen sees
// the same blocks and bytes, within the capacity, readable, with every
// file intact.
func TestDBEvictAcrossShardsReopen(t *testing.T) {
	const size, capacity = 8 << 10, 40 * (8 << 10)
	opts := &store.Options{Verify: storetest.Verify, Capacity: capacity, NoSync: true}
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	ns := storetest.Namespace("evict")
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < 2*capacity/size; i = int(next.Add(1)) - 1 {
				k := storetest.Key(fmt.Sprint(i))
				if _, err := db.Put(ctx, ns, k, storetest.Block(nil, storetest.Payload(k.String(), size-39))); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	before := db.Stats()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range store.Files(path) {
		checkFile(t, f)
	}
	if before.Evictions == 0 || before.BytesUsed > capacity {
		t.Fatalf("Stats = %+v; want evictions and at most %d bytes", before, capacity)
	}
	db, err = store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	after := db.Stats()
	if after.Blocks != before.Blocks || after.BytesUsed != before.BytesUsed {
		t.Errorf("after reopen %d blocks, %d bytes; before %d, %d", after.Blocks, after.BytesUsed, before.Blocks, before.BytesUsed)
	}
	n := 0
	for i := range 2 * capacity / size {
		k := storetest.Key(fmt.Sprint(i))
		got, err := db.Get(ctx, ns, k, nil)
		if err == nil {
			n++
			if want := storetest.Block(nil, storetest.Payload(k.String(), size-39)); !bytes.Equal(got, want) {
				t.Errorf("block %d: wrong bytes", i)
			}
		}
	}
	if int64(n) != after.Blocks {
		t.Errorf("%d blocks readable, Stats says %d", n, after.Blocks)
	}
}

// TestDBDuplicateAcrossShards plants in the second file a copy of a block
// of the first, as a crash can leave when a block evicted from one shard
// was put again into the other before the first's next commit: Open keeps
// one copy and removes the other.
func TestDBDuplicateAcrossShards(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	opts := &store.Options{Verify: storetest.Verify}
	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	ns, k := storetest.Namespace("dup"), storetest.Key("x")
	block := storetest.Block(nil, storetest.Payload("x", 1000))
	mustPut(t, db, ns, k, block)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	id := append(ns[:len(ns):len(ns)], k[:]...)
	files := store.Files(path)
	var meta []byte
	copyRec := func(from, to string) {
		src, err := bbolt.Open(from, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.View(func(tx *bbolt.Tx) error {
			meta = bytes.Clone(tx.Bucket([]byte("meta")).Get(id))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		src.Close()
		dst, err := bbolt.Open(to, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer dst.Close()
		if err := dst.Update(func(tx *bbolt.Tx) error {
			b, err := tx.Bucket([]byte("blocks")).CreateBucket(id)
			if err != nil {
				return err
			}
			if err := b.Put([]byte("v"), block); err != nil {
				return err
			}
			return tx.Bucket([]byte("meta")).Put(id, meta)
		}); err != nil {
			t.Fatal(err)
		}
	}
	copyRec(files[0], files[1])
	if meta == nil {
		t.Fatal("no metadata record for the block in the first file")
	}

	db, err = store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	if st := db.Stats(); st.Blocks != 1 || st.BytesUsed != int64(len(block)) {
		t.Errorf("Stats = %d blocks, %d bytes; want 1, %d", st.Blocks, st.BytesUsed, len(block))
	}
	if got, err := db.Get(ctx, ns, k, nil); err != nil || !bytes.Equal(got, block) {
		t.Errorf("Get = %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	copies := 0
	for _, f := range files {
		checkFile(t, f)
		b, err := bbolt.Open(f, 0o600, &bbolt.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		_ = b.View(func(tx *bbolt.Tx) error {
			if tx.Bucket([]byte("blocks")).Bucket(id) != nil {
				copies++
			}
			return nil
		})
		b.Close()
	}
	if copies != 1 {
		t.Errorf("%d copies of the block in the files after reopen; want 1", copies)
	}
}

func mustPut(t *testing.T, db *store.DB, ns prefix.Namespace, k prefix.Key, b []byte) {
	t.Helper()
	if stored, err := db.Put(ctx, ns, k, b); err != nil || !stored {
		t.Fatalf("Put = %v, %v", stored, err)
	}
}
