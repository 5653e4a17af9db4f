package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// Opener opens an empty store with opts for one test; it registers its own
// cleanup (Close, and any integrity check). A second Close must return nil.
type Opener func(t *testing.T, opts *store.Options) store.Store

// Clock is a manual clock for store.Options.Now.
type Clock struct{ ns atomic.Int64 }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Set moves the clock to t seconds after the epoch.
func (c *Clock) Set(t int64) { c.ns.Store(t * int64(time.Second)) }

// Run runs the conformance suite against the stores that open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"PutGet", testPutGet},
		{"IdempotentPut", testIdempotentPut},
		{"View", testView},
		{"LookupContains", testLookupContains},
		{"Delete", testDelete},
		{"InvalidKeys", testInvalidKeys},
		{"ContextCancelled", testContextCancelled},
		{"TooLarge", testTooLarge},
		{"VerifierRejects", testVerifierRejects},
		{"EvictLRULeafFirst", testEvictLRULeafFirst},
		{"Full", testFull},
		{"InvalidParent", testInvalidParent},
		{"ChainNeverEvictsItself", testChainNeverEvictsItself},
		{"OrphanEvictable", testOrphanEvictable},
		{"Quota", testQuota},
		{"QuotaNothingOwnToEvict", testQuotaNothingOwnToEvict},
		{"Concurrent", testConcurrent},
		{"ConcurrentEviction", testConcurrentEviction},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

var ctx = context.Background()

func opts(o store.Options) *store.Options {
	o.Verify = Verify
	return &o
}

func mustPut(t *testing.T, s store.Store, ns prefix.Namespace, k prefix.Key, b []byte) {
	t.Helper()
	stored, err := s.Put(ctx, ns, k, b)
	if err != nil || !stored {
		t.Fatalf("Put(%x) = %v, %v; want true, nil", k[:4], stored, err)
	}
}

func present(t *testing.T, s store.Store, ns prefix.Namespace, keys ...prefix.Key) []bool {
	t.Helper()
	got, err := s.Contains(ctx, ns, keys)
	if err != nil {
		t.Fatalf("Contains: %v", err)
	}
	return got
}

func testPutGet(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, k := Namespace("a"), Key("a")
	b := Block(nil, Payload("a", 1000))
	mustPut(t, s, ns, k, b)

	dst := make([]byte, 10, 4096)
	got, err := s.Get(ctx, ns, k, dst)
	if err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get = %d bytes, %v; want the block", len(got), err)
	}
	if &got[0] != &dst[:1][0] {
		t.Error("Get did not reuse dst's capacity")
	}
	if _, err := s.Get(ctx, ns, Key("missing"), nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(missing) err = %v, want ErrNotFound", err)
	}
	// Same key, other namespace: a different block.
	if _, err := s.Get(ctx, Namespace("other"), k, nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(other namespace) err = %v, want ErrNotFound", err)
	}
	st := s.Stats()
	if st.Blocks != 1 || st.BytesUsed != int64(len(b)) || st.Hits != 1 || st.Misses != 2 {
		t.Errorf("Stats = %+v; want 1 block of %d bytes, 1 hit, 2 misses", st, len(b))
	}
}

func testIdempotentPut(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, k := Namespace("a"), Key("a")
	first := Block(nil, Payload("first", 500))
	mustPut(t, s, ns, k, first)
	stored, err := s.Put(ctx, ns, k, Block(nil, Payload("second", 700)))
	if err != nil || stored {
		t.Fatalf("second Put = %v, %v; want false, nil", stored, err)
	}
	got, _ := s.Get(ctx, ns, k, nil)
	if !bytes.Equal(got, first) {
		t.Error("second Put rewrote the block")
	}
	if st := s.Stats(); st.Puts != 1 || st.PutBytes != int64(len(first)) || st.BytesUsed != int64(len(first)) {
		t.Errorf("Stats = %+v; want 1 put of %d bytes", st, len(first))
	}
}

func testView(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns := Namespace("a")
	keys := []prefix.Key{Key("0"), Key("1"), Key("2")}
	blocks := map[int][]byte{0: Block(nil, Payload("0", 300)), 2: Block(nil, Payload("2", 400))}
	for i, b := range blocks {
		mustPut(t, s, ns, keys[i], b)
	}
	var seen []int
	err := s.View(ctx, ns, keys, func(i int, b []byte, found bool) error {
		seen = append(seen, i)
		want, ok := blocks[i]
		if found != ok || !bytes.Equal(b, want) || (!found && b != nil) {
			t.Errorf("View key %d: found=%v, %d bytes; want found=%v, %d bytes", i, found, len(b), ok, len(want))
		}
		return nil
	})
	if err != nil || fmt.Sprint(seen) != "[0 1 2]" {
		t.Fatalf("View visited %v, err %v; want [0 1 2], nil", seen, err)
	}
	stop := errors.New("stop")
	calls := 0
	err = s.View(ctx, ns, keys, func(int, []byte, bool) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("View with failing fn: %d calls, err %v; want 1 call, the fn's error", calls, err)
	}
}

// chain puts n blocks, each the parent of the next, and returns their keys.
func chain(t *testing.T, s store.Store, ns prefix.Namespace, name string, n, size int) []prefix.Key {
	t.Helper()
	keys := make([]prefix.Key, n)
	for i := range keys {
		keys[i] = Key(fmt.Sprintf("%s/%d", name, i))
		var parent *prefix.Key
		if i > 0 {
			parent = &keys[i-1]
		}
		mustPut(t, s, ns, keys[i], Block(parent, Payload(keys[i].String(), size)))
	}
	return keys
}

func testLookupContains(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns := Namespace("a")
	keys := chain(t, s, ns, "c", 5, 100)
	if n, err := s.Lookup(ctx, ns, keys); n != 5 || err != nil {
		t.Errorf("Lookup(all) = %d, %v; want 5", n, err)
	}
	withMissing := append(append([]prefix.Key{}, keys[:2]...), Key("missing"), keys[3])
	if n, err := s.Lookup(ctx, ns, withMissing); n != 2 || err != nil {
		t.Errorf("Lookup(gap at 2) = %d, %v; want 2", n, err)
	}
	if n, err := s.Lookup(ctx, ns, []prefix.Key{Key("missing"), keys[0]}); n != 0 || err != nil {
		t.Errorf("Lookup(first missing) = %d, %v; want 0", n, err)
	}
	if n, _ := s.Lookup(ctx, Namespace("other"), keys); n != 0 {
		t.Errorf("Lookup(other namespace) = %d; want 0", n)
	}
	if got := fmt.Sprint(present(t, s, ns, withMissing...)); got != "[true true false true]" {
		t.Errorf("Contains = %s; want [true true false true]", got)
	}
}

func testDelete(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns := Namespace("a")
	keys := chain(t, s, ns, "c", 3, 100)
	n, err := s.Delete(ctx, ns, []prefix.Key{keys[1], Key("missing"), keys[1]})
	if n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v; want 1, nil", n, err)
	}
	if got := fmt.Sprint(present(t, s, ns, keys...)); got != "[true false true]" {
		t.Errorf("Contains after Delete = %s", got)
	}
	if st := s.Stats(); st.Blocks != 2 || st.BytesUsed != int64(2*(headerLen+100)) {
		t.Errorf("Stats after Delete = %+v; want 2 blocks", st)
	}
	// A deleted key can be put again.
	mustPut(t, s, ns, keys[1], Block(&keys[0], Payload("again", 10)))
}

func testInvalidKeys(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, b := Namespace("a"), Block(nil, nil)
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrInvalidKey) {
			t.Errorf("%s: err = %v, want ErrInvalidKey", what, err)
		}
	}
	_, err := s.Put(ctx, ns, prefix.Key{}, b)
	check("Put(zero key)", err)
	_, err = s.Put(ctx, prefix.Namespace{}, Key("a"), b)
	check("Put(zero namespace)", err)
	_, err = s.Get(ctx, ns, prefix.Key{}, nil)
	check("Get(zero key)", err)
	_, err = s.Lookup(ctx, ns, nil)
	check("Lookup(no keys)", err)
	_, err = s.Contains(ctx, ns, []prefix.Key{})
	check("Contains(no keys)", err)
	_, err = s.Delete(ctx, ns, nil)
	check("Delete(no keys)", err)
	check("View(no keys)", s.View(ctx, ns, nil, func(int, []byte, bool) error { return nil }))
	_, err = s.Lookup(ctx, ns, []prefix.Key{Key("a"), {}})
	check("Lookup(a zero key)", err)
}

func testContextCancelled(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, k := Namespace("a"), Key("a")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Put(cctx, ns, k, Block(nil, Payload("a", 100))); !errors.Is(err, context.Canceled) {
		t.Errorf("Put(cancelled) err = %v, want context.Canceled", err)
	}
	if got := present(t, s, ns, k); got[0] {
		t.Error("Put with a cancelled context stored the block")
	}
	if _, err := s.Get(cctx, ns, k, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(cancelled) err = %v", err)
	}
	if _, err := s.Lookup(cctx, ns, []prefix.Key{k}); !errors.Is(err, context.Canceled) {
		t.Errorf("Lookup(cancelled) err = %v", err)
	}
	if st := s.Stats(); st.Puts != 0 || st.Blocks != 0 {
		t.Errorf("Stats = %+v; want nothing stored", st)
	}
}

func testTooLarge(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{MaxBlockBytes: 1000}))
	ns := Namespace("a")
	mustPut(t, s, ns, Key("fits"), Block(nil, Payload("a", 1000-headerLen)))
	_, err := s.Put(ctx, ns, Key("big"), Block(nil, Payload("a", 1001-headerLen)))
	if !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("Put(1001 bytes) err = %v, want ErrTooLarge", err)
	}
	if present(t, s, ns, Key("big"))[0] {
		t.Error("rejected block was stored")
	}
}

func testVerifierRejects(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, k := Namespace("a"), Key("a")
	b := Block(nil, Payload("a", 100))
	b[len(b)-1] ^= 1
	if _, err := s.Put(ctx, ns, k, b); !errors.Is(err, ErrBadBlock) {
		t.Fatalf("Put(corrupt) err = %v, want it to wrap ErrBadBlock", err)
	}
	if present(t, s, ns, k)[0] || s.Stats().Blocks != 0 {
		t.Error("rejected block was stored")
	}
}

// testEvictLRULeafFirst fills a four-block store with the chain a <- b <- c
// and a lone d, then adds blocks one at a time: the least recently used leaf
// goes first, and a recently used parent is still kept until its children go.
func testEvictLRULeafFirst(t *testing.T, open Opener) {
	const size = 100
	var clk Clock
	s := open(t, opts(store.Options{Capacity: 4 * (headerLen + size), Now: clk.Now}))
	ns := Namespace("a")
	put := func(at int64, name string, parent string) {
		t.Helper()
		clk.Set(at)
		var p *prefix.Key
		if parent != "" {
			k := Key(parent)
			p = &k
		}
		mustPut(t, s, ns, Key(name), Block(p, Payload(name, size)))
	}
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	state := func() string {
		keys := make([]prefix.Key, len(names))
		for i, n := range names {
			keys[i] = Key(n)
		}
		var out []byte
		for i, ok := range present(t, s, ns, keys...) {
			if ok {
				out = append(out, names[i][0])
			}
		}
		return string(out)
	}
	put(1, "a", "")
	put(2, "b", "a")
	put(3, "c", "b")
	put(4, "d", "")
	clk.Set(5)
	if _, err := s.Get(ctx, ns, Key("a"), nil); err != nil { // a: newest, but pinned by b
		t.Fatal(err)
	}
	steps := []struct{ name, want string }{
		{"e", "abde"}, // leaves c(3) d(4): c goes
		{"f", "adef"}, // leaves b(2) d(4) e(6): b goes, a becomes a leaf
		{"g", "aefg"}, // leaves a(5) d(4) e f: d goes
		{"h", "efgh"}, // leaves a(5) e(6) ...: a goes
	}
	for i, st := range steps {
		put(int64(6+i), st.name, "")
		if got := state(); got != st.want {
			t.Fatalf("after putting %s: present %q, want %q", st.name, got, st.want)
		}
	}
	if st := s.Stats(); st.Evictions != 4 || st.BytesUsed > st.Capacity || st.Blocks != 4 {
		t.Errorf("Stats = %+v; want 4 evictions, 4 blocks within capacity", st)
	}
}

func testFull(t *testing.T, open Opener) {
	const size = 100
	s := open(t, opts(store.Options{Capacity: 2 * (headerLen + size)}))
	ns := Namespace("a")
	if _, err := s.Put(ctx, ns, Key("huge"), Block(nil, Payload("huge", 3*size))); !errors.Is(err, store.ErrFull) {
		t.Errorf("Put(bigger than capacity) err = %v, want ErrFull", err)
	}
	// x <- y fills the store; z extends that chain, so making room for it
	// would evict its own ancestors: nothing is evictable for z.
	x, y, z := Key("x"), Key("y"), Key("z")
	mustPut(t, s, ns, x, Block(nil, Payload("x", size)))
	mustPut(t, s, ns, y, Block(&x, Payload("y", size)))
	if _, err := s.Put(ctx, ns, z, Block(&y, Payload("z", size))); !errors.Is(err, store.ErrFull) {
		t.Errorf("Put(extends a chain filling the store) err = %v, want ErrFull", err)
	}
	if got := fmt.Sprint(present(t, s, ns, x, y, z, Key("huge"))); got != "[true true false false]" {
		t.Errorf("Contains after ErrFull = %s; want [true true false false]", got)
	}
	if st := s.Stats(); st.Evictions != 0 || st.Blocks != 2 {
		t.Errorf("Stats = %+v; want no evictions, 2 blocks", st)
	}
	// A block of another chain evicts the old chain leaf-first.
	mustPut(t, s, ns, Key("w"), Block(nil, Payload("w", size)))
	if got := fmt.Sprint(present(t, s, ns, x, y, Key("w"))); got != "[true false true]" {
		t.Errorf("Contains after an unrelated Put = %s; want [true false true]", got)
	}
}

// testInvalidParent: a block naming itself as parent, or closing a cycle of
// parent links, would never be evictable; Put rejects it and stores nothing.
func testInvalidParent(t *testing.T, open Opener) {
	const size = 100
	s := open(t, opts(store.Options{Capacity: 3 * (headerLen + size)}))
	ns := Namespace("a")
	self := Key("self")
	if _, err := s.Put(ctx, ns, self, Block(&self, Payload("self", size))); !errors.Is(err, store.ErrInvalidParent) {
		t.Errorf("Put(parent = own key) err = %v, want ErrInvalidParent", err)
	}
	// x's parent is y, y's parent z; z naming x would close x->y->z->x.
	x, y, z := Key("x"), Key("y"), Key("z")
	mustPut(t, s, ns, x, Block(&y, Payload("x", size)))
	mustPut(t, s, ns, y, Block(&z, Payload("y", size)))
	if _, err := s.Put(ctx, ns, z, Block(&x, Payload("z", size))); !errors.Is(err, store.ErrInvalidParent) {
		t.Errorf("Put(closes a cycle) err = %v, want ErrInvalidParent", err)
	}
	if got := fmt.Sprint(present(t, s, ns, self, x, y, z)); got != "[false true true false]" {
		t.Errorf("Contains = %s; want [false true true false]", got)
	}
	// The store stays usable: x and y are evictable for new blocks.
	for i := range 3 {
		mustPut(t, s, ns, Key(fmt.Sprint("n", i)), Block(nil, Payload(fmt.Sprint("n", i), size)))
	}
	if st := s.Stats(); st.Blocks != 3 || st.Evictions != 2 {
		t.Errorf("Stats = %+v; want 3 blocks, 2 evictions", st)
	}
}

// testChainNeverEvictsItself stores one chain three times the capacity:
// no block evicts an ancestor, so the stored blocks are always a prefix of
// the chain, and once it fills the store the rest is refused with ErrFull.
// A second chain then evicts the first one leaf-first and is reachable.
func testChainNeverEvictsItself(t *testing.T, open Opener) {
	const size, fit = 100, 8
	var clk Clock
	s := open(t, opts(store.Options{Capacity: fit * (headerLen + size), Now: clk.Now}))
	ns := Namespace("a")
	put := func(name string, n int) []prefix.Key {
		keys := make([]prefix.Key, n)
		stored := 0
		for i := range keys {
			clk.Set(clk.Now().Unix() + 1)
			keys[i] = Key(fmt.Sprintf("%s/%d", name, i))
			var parent *prefix.Key
			if i > 0 {
				parent = &keys[i-1]
			}
			ok, err := s.Put(ctx, ns, keys[i], Block(parent, Payload(keys[i].String(), size)))
			switch {
			case err == nil && ok:
				stored++
			case errors.Is(err, store.ErrFull):
			default:
				t.Fatalf("Put(%s/%d) = %v, %v", name, i, ok, err)
			}
			if n, err := s.Lookup(ctx, ns, keys[:i+1]); err != nil || n != stored {
				t.Fatalf("after Put(%s/%d): Lookup = %d, %v; want the %d stored blocks reachable", name, i, n, err, stored)
			}
		}
		if stored != fit {
			t.Errorf("chain %s: %d blocks stored, want %d", name, stored, fit)
		}
		return keys
	}
	a := put("a", 3*fit)
	b := put("b", 3*fit)
	if n, _ := s.Lookup(ctx, ns, a); n != 0 {
		t.Errorf("first chain: Lookup = %d after the second filled the store, want 0", n)
	}
	if n, _ := s.Lookup(ctx, ns, b); n != fit {
		t.Errorf("second chain: Lookup = %d, want %d", n, fit)
	}
	if st := s.Stats(); st.Blocks != fit || st.BytesUsed > st.Capacity {
		t.Errorf("Stats = %+v; want %d blocks within capacity", st, fit)
	}
}

// testOrphanEvictable: a block whose parent is absent (deleted) is evicted
// like any leaf, before a more recently used one.
func testOrphanEvictable(t *testing.T, open Opener) {
	const size = 100
	var clk Clock
	s := open(t, opts(store.Options{Capacity: 3 * (headerLen + size), Now: clk.Now}))
	ns := Namespace("a")
	clk.Set(1)
	keys := chain(t, s, ns, "c", 3, size)
	if n, err := s.Delete(ctx, ns, keys[1:2]); n != 1 || err != nil {
		t.Fatalf("Delete = %d, %v", n, err)
	}
	clk.Set(2)
	if _, err := s.Get(ctx, ns, keys[0], nil); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, ns, Key("x"), Block(nil, Payload("x", size)))
	clk.Set(3)
	mustPut(t, s, ns, Key("y"), Block(nil, Payload("y", size)))
	// c/2 (orphan, access 1) is the least recently used leaf.
	if got := fmt.Sprint(present(t, s, ns, keys[0], keys[2], Key("x"), Key("y"))); got != "[true false true true]" {
		t.Errorf("Contains = %s; want [true false true true]", got)
	}
	// An orphan is stored in free room but evicts nothing: z's parent is
	// absent and the store is full.
	z := Key("z")
	if _, err := s.Put(ctx, ns, z, Block(&keys[1], Payload("z", size))); !errors.Is(err, store.ErrFull) {
		t.Errorf("Put(orphan into a full store) err = %v, want ErrFull", err)
	}
}

// testQuota: a tenant over its quota evicts its own least recently used
// blocks, leaf-first, and never another tenant's; usage is per tenant.
func testQuota(t *testing.T, open Opener) {
	const size = 100
	blk := int64(headerLen + size)
	var clk Clock
	s := open(t, opts(store.Options{Capacity: 10 * blk, Quotas: map[string]int64{"a": 3 * blk}, Now: clk.Now}))
	ns := Namespace("q")
	ta, tb := store.WithTenant(ctx, "a"), store.WithTenant(ctx, "b")
	put := func(c context.Context, name string, parent string) error {
		clk.Set(clk.Now().Unix() + 1)
		var p *prefix.Key
		if parent != "" {
			k := Key(parent)
			p = &k
		}
		_, err := s.Put(c, ns, Key(name), Block(p, Payload(name, size)))
		return err
	}
	for _, b := range []string{"b1", "b2"} { // b's blocks are the oldest
		if err := put(tb, b, ""); err != nil {
			t.Fatal(err)
		}
	}
	for _, st := range []struct{ name, parent string }{{"a1", ""}, {"a2", "a1"}, {"a3", ""}, {"a4", ""}, {"a5", ""}, {"a6", "a5"}} {
		if err := put(ta, st.name, st.parent); err != nil {
			t.Fatalf("Put(%s) as a: %v", st.name, err)
		}
	}
	names := []string{"b1", "b2", "a1", "a2", "a3", "a4", "a5", "a6"}
	keys := make([]prefix.Key, len(names))
	for i, n := range names {
		keys[i] = Key(n)
	}
	var got []string
	for i, ok := range present(t, s, ns, keys...) {
		if ok {
			got = append(got, names[i])
		}
	}
	// a4 takes a over its quota (a1 a2 a3 a4) and evicts a's least
	// recently used leaf, a2 (a1 is pinned by it); a5 evicts a1, now a
	// leaf; a6 extends a5 and evicts a3, not its parent. b's blocks, older
	// than all of them, are never touched.
	if want := "[b1 b2 a4 a5 a6]"; fmt.Sprint(got) != want {
		t.Errorf("present %v, want %s", got, want)
	}
	st := s.Stats()
	if ua := st.Tenants["a"]; ua.BytesUsed != 3*blk || ua.Blocks != 3 || ua.Quota != 3*blk {
		t.Errorf("tenant a usage %+v; want 3 blocks, %d bytes, quota %d", ua, 3*blk, 3*blk)
	}
	if ub := st.Tenants["b"]; ub.BytesUsed != 2*blk || ub.Blocks != 2 || ub.Quota != 0 {
		t.Errorf("tenant b usage %+v; want 2 blocks, no quota", ub)
	}
	if st.Evictions != 3 {
		t.Errorf("Evictions = %d, want 3", st.Evictions)
	}
	if store.TenantOf(ta) != "a" || store.TenantOf(ctx) != "" {
		t.Error("TenantOf does not return the label of WithTenant")
	}
	long := store.WithTenant(ctx, string(make([]byte, store.MaxTenantLen+1)))
	if err := put(long, "long", ""); !errors.Is(err, store.ErrInvalidKey) {
		t.Errorf("Put with a %d-byte tenant: %v, want ErrInvalidKey", store.MaxTenantLen+1, err)
	}
}

// testQuotaNothingOwnToEvict: a tenant whose quota is taken by the chain it
// is extending, or who puts a block bigger than its quota, gets ErrQuota;
// nothing of another tenant is evicted and nothing is stored.
func testQuotaNothingOwnToEvict(t *testing.T, open Opener) {
	const size = 100
	blk := int64(headerLen + size)
	s := open(t, opts(store.Options{Capacity: 10 * blk, Quotas: map[string]int64{"a": 2 * blk, "b": 5 * blk}}))
	ns := Namespace("q")
	ta, tb := store.WithTenant(ctx, "a"), store.WithTenant(ctx, "b")
	mustPut(t, s, ns, Key("b1"), Block(nil, Payload("b1", size)))
	if _, err := s.Put(tb, ns, Key("b2"), Block(nil, Payload("b2", size))); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ta, ns, Key("big"), Block(nil, Payload("big", 3*size))); !errors.Is(err, store.ErrQuota) {
		t.Errorf("Put(bigger than the quota) err = %v, want ErrQuota", err)
	}
	x, y, z := Key("x"), Key("y"), Key("z")
	for _, p := range []struct {
		k      prefix.Key
		parent *prefix.Key
	}{{x, nil}, {y, &x}} {
		if _, err := s.Put(ta, ns, p.k, Block(p.parent, Payload(p.k.String(), size))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ta, ns, z, Block(&y, Payload("z", size))); !errors.Is(err, store.ErrQuota) {
		t.Errorf("Put(extends the chain filling the quota) err = %v, want ErrQuota", err)
	}
	if got := fmt.Sprint(present(t, s, ns, Key("b1"), Key("b2"), x, y, z, Key("big"))); got != "[true true true true false false]" {
		t.Errorf("Contains = %s; want [true true true true false false]", got)
	}
	if st := s.Stats(); st.Evictions != 0 || st.Tenants["a"].Blocks != 2 || st.Tenants[""].Blocks != 1 {
		t.Errorf("Stats = %+v; want no evictions, 2 blocks of a, 1 unlabelled", st)
	}
}

// testConcurrent races Puts of shared and private keys with reads; exactly
// one Put per key may report stored == true.
func testConcurrent(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns := Namespace("a")
	const workers, iters, shared = 8, 30, 6
	var stored [shared]atomic.Int32
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var buf []byte
			for i := range iters {
				j := (w + i) % shared
				sk := Key(fmt.Sprint("shared/", j))
				ok, err := s.Put(ctx, ns, sk, Block(nil, Payload(sk.String(), 200)))
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					stored[j].Add(1)
				}
				own := Key(fmt.Sprint("own/", w, "/", i))
				if ok, err := s.Put(ctx, ns, own, Block(&sk, Payload(own.String(), 100+i))); !ok || err != nil {
					t.Errorf("Put(own) = %v, %v; want true, nil", ok, err)
					return
				}
				if buf, err = s.Get(ctx, ns, sk, buf); err != nil || !bytes.Equal(buf, Block(nil, Payload(sk.String(), 200))) {
					t.Errorf("Get(shared %d): %v", j, err)
				}
				if n, err := s.Lookup(ctx, ns, []prefix.Key{sk, own}); n != 2 || err != nil {
					t.Errorf("Lookup = %d, %v; want 2", n, err)
				}
				if i%3 == 0 {
					if n, err := s.Delete(ctx, ns, []prefix.Key{own}); n != 1 || err != nil {
						t.Errorf("Delete = %d, %v; want 1", n, err)
					}
				}
			}
		})
	}
	wg.Wait()
	for j := range stored {
		if n := stored[j].Load(); n != 1 {
			t.Errorf("shared key %d: %d Puts reported stored, want 1", j, n)
		}
	}
	want := int64(shared + workers*iters - workers*(iters/3))
	if st := s.Stats(); st.Blocks != want {
		t.Errorf("Blocks = %d, want %d", st.Blocks, want)
	}
}

// testConcurrentEviction fills a small store from many goroutines: it must
// stay within capacity and every Put must succeed.
func testConcurrentEviction(t *testing.T, open Opener) {
	const size, workers, iters = 200, 8, 25
	// Chains of at most three: a commit pins its blocks and their
	// ancestors, at most 3 per writer, well within capacity.
	// A chain's next block finds its parent evicted by the other writers
	// now and then: it is then refused with ErrFull (an orphan evicts
	// nothing), never anything else.
	s := open(t, opts(store.Options{Capacity: 4 * workers * (headerLen + size)}))
	ns := Namespace("a")
	var wg sync.WaitGroup
	var refused atomic.Int64
	for w := range workers {
		wg.Go(func() {
			var prev *prefix.Key
			for i := range iters {
				k := Key(fmt.Sprint(w, "/", i))
				if _, err := s.Put(ctx, ns, k, Block(prev, Payload(k.String(), size))); err != nil {
					if prev != nil && errors.Is(err, store.ErrFull) {
						refused.Add(1)
						prev = nil
						continue
					}
					t.Errorf("Put: %v", err)
					return
				}
				if _, err := s.Get(ctx, ns, k, nil); err != nil && !errors.Is(err, store.ErrNotFound) {
					t.Errorf("Get: %v", err)
				}
				if i%3 != 2 {
					prev = &k
				} else {
					prev = nil // start a new chain
				}
			}
		})
	}
	wg.Wait()
	st := s.Stats()
	if st.BytesUsed > st.Capacity || st.Puts+refused.Load() != workers*iters || st.Evictions != st.Puts-st.Blocks {
		t.Errorf("Stats = %+v, %d refused; want within capacity, %d puts and refusals, evictions = puts - blocks", st, refused.Load(), workers*iters)
	}
}

func testClosed(t *testing.T, open Opener) {
	s := open(t, opts(store.Options{}))
	ns, k := Namespace("a"), Key("a")
	mustPut(t, s, ns, k, Block(nil, nil))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := s.Put(ctx, ns, Key("b"), Block(nil, nil)); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Get(ctx, ns, k, nil); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Get after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Lookup(ctx, ns, []prefix.Key{k}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Lookup after Close: %v, want ErrClosed", err)
	}
	if _, err := s.Delete(ctx, ns, []prefix.Key{k}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Delete after Close: %v, want ErrClosed", err)
	}
}
