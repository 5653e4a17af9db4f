package cachenode_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// outcomes counts results by outcome and code.
func outcomes(res []*kvcachev1.PutResult) map[string]int {
	m := map[string]int{}
	for _, r := range res {
		m[fmt.Sprint(r.GetOutcome(), "/", codes.Code(r.GetCode()))]++
	}
	return m
}

const (
	stored   = "OUTCOME_STORED/OK"
	invalid  = "OUTCOME_REJECTED/InvalidArgument"
	exhausts = "OUTCOME_REJECTED/ResourceExhausted"
)

// Row 4: 124 blocks naming their own key as parent were never evicted at
// a 64 MiB capacity; every later Put answered "store: full", also after a
// restart. Here: 16 such blocks into an 8-block store, then 3x capacity of
// ordinary blocks, a restart, and more.
func TestSelfParentBlocksAreRejected(t *testing.T) {
	b := chainBlock(t, 0, nil)
	capacity := 8 * int64(len(b))
	cfg := cachenode.Config{Capacity: capacity, Data: t.TempDir()}
	n := testnode.Start(t, cfg)
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	var keys, blocks [][]byte
	for i := range 16 {
		k := key(fmt.Sprint("self", i))
		keys, blocks = append(keys, k), append(blocks, chainBlock(t, i, k))
	}
	res, err := putBlocks(ctxT(t), c, keys, blocks)
	if got := outcomes(res); err != nil || got[invalid] != 16 {
		t.Fatalf("self-parent blocks: %v, %v; want 16 rejected InvalidArgument", got, err)
	}
	if !strings.Contains(res[0].GetReason(), "itself as its parent") {
		t.Errorf("reason %q does not say why", res[0].GetReason())
	}
	put := func(c kvcachev1.KVCacheServiceClient, name string, count int) map[string]int {
		var keys, blocks [][]byte
		for i := range count {
			keys, blocks = append(keys, key(fmt.Sprint(name, i))), append(blocks, chainBlock(t, i, nil))
		}
		res, err := putBlocks(ctxT(t), c, keys, blocks)
		if err != nil {
			t.Fatal(err)
		}
		return outcomes(res)
	}
	if got := put(c, "plain", 24); got[stored] != 24 {
		t.Errorf("3x capacity of ordinary blocks: %v; want all stored", got)
	}
	n.Stop(t)
	n = testnode.Start(t, cfg)
	c = kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	if got := put(c, "after-restart", 8); got[stored] != 8 {
		t.Errorf("after a restart: %v; want all stored", got)
	}
}

// Row 5: one chain of 372 blocks into a store of a third of that: block
// 124 evicted its parent 123, and at the end prefix_len was 0. Here 72
// blocks into a 24-block store, sent as the client does (streams of 8):
// the first 24 stay reachable, the rest are refused; a second chain then
// takes the store over leaf-first and its first 24 are reachable.
func TestLongChainKeepsItsPrefix(t *testing.T) {
	const fit, total, perStream = 24, 72, 8
	b := chainBlock(t, 0, nil)
	n := testnode.Start(t, cachenode.Config{Capacity: fit * int64(len(b))})
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	chain := func(name string) ([][]byte, map[string]int) {
		keys := make([][]byte, total)
		got := map[string]int{}
		for i := range keys {
			keys[i] = key(fmt.Sprint(name, i))
		}
		for s := 0; s < total; s += perStream {
			var blocks [][]byte
			for i := s; i < s+perStream; i++ {
				var parent []byte
				if i > 0 {
					parent = keys[i-1]
				}
				blocks = append(blocks, chainBlock(t, i, parent))
			}
			res, err := putBlocks(ctxT(t), c, keys[s:s+perStream], blocks)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range outcomes(res) {
				got[k] += v
			}
		}
		return keys, got
	}
	lookup := func(keys [][]byte) uint32 {
		r, err := c.Lookup(ctxT(t), &kvcachev1.LookupRequest{Namespace: testNS, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetPrefixLen()
	}
	a, got := chain("a")
	if pl := lookup(a); pl != fit || got[stored] != fit || got[exhausts] != total-fit {
		t.Errorf("chain of %d into %d: prefix_len %d, outcomes %v; want %d reachable, the rest ResourceExhausted", total, fit, pl, got, fit)
	}
	b2, got := chain("b")
	if pl, pa := lookup(b2), lookup(a); pl != fit || pa != 0 || got[stored] != fit {
		t.Errorf("second chain: prefix_len %d (first chain %d), outcomes %v; want %d and 0", pl, pa, got, fit)
	}
	st, err := c.Stats(ctxT(t), &kvcachev1.StatsRequest{})
	if err != nil || st.GetBlocks() != fit {
		t.Errorf("Stats %v, %v; want %d blocks, every one reachable", st, err, fit)
	}
}

// Row 6: on a full disk Put answered Internal "no space left on device",
// and a capacity larger than the disk was accepted silently. Here a 24 MiB
// tmpfs (root only) under a node with a 1 GiB capacity.
func TestDiskFullIsResourceExhausted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := filepath.Join(t.TempDir(), "small")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 8<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	n := testnode.Start(t, cachenode.Config{Data: dir, Capacity: 1 << 30, MetricsListen: "127.0.0.1:0"})
	if short := metric(t, n, "kvcache_store_capacity_over_disk_bytes"); short <= 0 {
		t.Errorf("capacity over disk metric = %v, want > 0 for 1 GiB on a 24 MiB file system", short)
	}
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	var storedKeys [][]byte
	var full *kvcachev1.PutResult
	for i := 0; full == nil && i < 400; i++ {
		var keys, blocks [][]byte
		for j := range 16 {
			keys, blocks = append(keys, key(fmt.Sprint("disk", i, "/", j))), append(blocks, chainBlock(t, j, nil))
		}
		res, err := putBlocks(ctxT(t), c, keys, blocks)
		if err != nil {
			t.Fatalf("Put stream %d: %v", i, err)
		}
		for j, r := range res {
			switch {
			case r.GetOutcome() == kvcachev1.PutResult_OUTCOME_STORED:
				storedKeys = append(storedKeys, keys[j])
			case full == nil:
				full = r
			}
		}
	}
	if full == nil || codes.Code(full.GetCode()) != codes.ResourceExhausted || !strings.Contains(full.GetReason(), "no space") {
		t.Fatalf("disk full: %v; want a block rejected ResourceExhausted saying no space", full)
	}
	// Reads go on.
	r, err := c.Lookup(ctxT(t), &kvcachev1.LookupRequest{Namespace: testNS, Keys: storedKeys})
	if err != nil || int(r.GetPrefixLen()) != len(storedKeys) {
		t.Errorf("Lookup of the %d stored blocks on a full disk: %v, %v", len(storedKeys), r, err)
	}
	gs, err := c.Get(ctxT(t), &kvcachev1.GetRequest{Namespace: testNS, Keys: storedKeys[:1]})
	if err == nil {
		_, err = gs.Recv()
	}
	if err != nil {
		t.Errorf("Get on a full disk: %v", err)
	}
	// Space frees: writes resume.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	res, err := putBlocks(ctxT(t), c, [][]byte{key("resumed")}, [][]byte{chainBlock(t, 1, nil)})
	if err != nil || res[0].GetOutcome() != kvcachev1.PutResult_OUTCOME_STORED {
		t.Errorf("Put after space freed: %v, %v", res, err)
	}
}

// Row 7: 2000 idle data-plane connections held all 256 slots and the
// other 1744 were refused "busy": the data plane was locked out. Here 300
// idle connections, from one address and (with no per-address limit) as
// if from many; an active client from another address is still served.
func TestIdleDataConnsDoNotLockOut(t *testing.T) {
	tests := []struct {
		name      string
		perAddr   int
		wantOpen  float64 // at most this many connections held
		wantEvent string  // refusal or reclaim counted
	}{
		{"per-address limit", 0, 64 + 1, `reason="per_addr"`},
		{"idle slots reclaimed", 1000, 256, `reason="reclaimed"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := testnode.Start(t, cachenode.Config{DataListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0", DataConnsPerAddr: tc.perAddr})
			ctx := ctxT(t)
			var idle []net.Conn
			defer func() {
				for _, c := range idle {
					c.Close()
				}
			}()
			for range 300 {
				nc, err := net.Dial("tcp", n.DataAddr())
				if err != nil {
					t.Fatal(err)
				}
				idle = append(idle, nc)
			}
			waitFor(t, "the node to see every connection", func() bool {
				return metric(t, n, "kvcache_data_conns_open")+metric(t, n, "kvcache_data_conns_refused_total") >= 300
			})
			if open := metric(t, n, "kvcache_data_conns_open"); open > tc.wantOpen {
				t.Errorf("%v data-plane connections open, want at most %v", open, tc.wantOpen)
			}
			if got := metric(t, n, "kvcache_data_conns_refused_total", tc.wantEvent); got == 0 {
				t.Errorf("no %s counted", tc.wantEvent)
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
			nc, err := d.DialContext(ctx, "tcp", n.DataAddr())
			if err != nil {
				t.Skipf("dial from 127.0.0.2: %v", err)
			}
			dc := dataplane.NewConn(nc, dataplane.DialOptions{})
			defer dc.Close()
			var found []bool
			sink := dataplane.Sink{Block: func(int, int) []byte { return nil }, Chunk: func(int, int, []byte) {}, Done: func(_ int, f bool) { found = append(found, f) }}
			if err := dc.Get(ctx, 0, prefix.Namespace(testNS), []prefix.Key{prefix.Key(key("x"))}, sink); err != nil {
				var re *dataplane.RemoteError
				if errors.As(err, &re) {
					t.Fatalf("active client refused: %v (code %d)", err, re.Code)
				}
				t.Fatalf("active client: %v", err)
			}
			if len(found) != 1 || found[0] {
				t.Errorf("active client's Get: found %v, want one miss", found)
			}
		})
	}
}
