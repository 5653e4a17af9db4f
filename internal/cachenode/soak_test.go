package cachenode_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

var soakShape = kvblock.Shape{Tokens: 16, Layers: 8, KVHeads: 4, HeadDim: 64} // ~66 KB in int8

func soakBlock(t *testing.T, seed int, parent []byte) []byte {
	n := soakShape.Tokens * soakShape.Layers * soakShape.KVHeads * soakShape.HeadDim
	kv := &kvblock.KV{Shape: soakShape, K: make([]float32, n), V: make([]float32, n)}
	for i := range kv.K {
		kv.K[i] = float32((seed+i)%113) / 16
		kv.V[i] = float32((seed*7+i)%127) / 16
	}
	m := kvblock.Meta{Codec: kvblock.Int8, Sinks: -1}
	if parent != nil {
		m.Parent, m.HasParent = prefix.Key(parent), true
	}
	b, err := kvblock.Encode(nil, kv, m)
	if err != nil {
		t.Error(err)
	}
	return b
}

// diskBytes is the space the file takes on disk (bbolt grows it sparsely).
func diskBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}

// TestSoak is the bounded soak of issue 10: mixed Put/Get/Lookup at three
// times the capacity with hostile streams alongside (stalled 8 MiB
// uploads, self-parent blocks, 65,536-key lookups). The heap stays under
// the memory limit, the file under capacity + 10%, every chain stays
// reachable from its first block, and afterwards every goroutine is gone.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const (
		capacity = 8 << 20
		memLimit = 512 << 20
		workers  = 4
		chainLen = 12
	)
	prev := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(prev)
	dir := t.TempDir()
	n := testnode.Start(t, cachenode.Config{Data: dir, Capacity: capacity, MemoryLimit: memLimit, MaxBlockBytes: 8 << 20,
		AssemblyBudget: 32 << 20, PutIdleTimeout: 3 * time.Second, MaxReads: 8, MetricsListen: "127.0.0.1:0"})
	cc, err := grpc.NewClient(n.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c := kvcachev1.NewKVCacheServiceClient(cc)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var peakHeap, peakDisk atomic.Int64
	stopSample := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			peakHeap.Store(max(peakHeap.Load(), int64(s[0].Value.Uint64())))
			var disk int64
			for _, f := range store.Files(filepath.Join(dir, cachenode.DBFile)) {
				disk += diskBytes(f)
			}
			peakDisk.Store(max(peakDisk.Load(), disk))
			select {
			case <-stopSample:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})

	var wg sync.WaitGroup
	var written, reachable, chains atomic.Int64
	for w := range workers {
		wg.Go(func() {
			for i := 0; written.Load() < 3*capacity; i++ {
				keys := make([][]byte, chainLen)
				blocks := make([][]byte, chainLen)
				for j := range keys {
					keys[j] = key(fmt.Sprint("soak", w, "/", i, "/", j))
					var parent []byte
					if j > 0 {
						parent = keys[j-1]
					}
					blocks[j] = soakBlock(t, w*1000+i*17+j, parent)
				}
				res, err := putBlocks(ctx, c, keys, blocks)
				if err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				stored := 0
				for j, r := range res {
					switch {
					case r.GetOutcome() == kvcachev1.PutResult_OUTCOME_STORED:
						stored++
						written.Add(int64(len(blocks[j])))
					case codes.Code(r.GetCode()) != codes.ResourceExhausted:
						t.Errorf("block %d: %v", j, r)
					}
				}
				lr, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: testNS, Keys: keys})
				switch {
				case status.Code(err) == codes.ResourceExhausted: // --max-reads, under the hostile lookups
				case err != nil:
					t.Errorf("Lookup: %v", err)
				default:
					chains.Add(1)
					if lr.GetPrefixLen() > 0 {
						reachable.Add(1)
					}
					if int(lr.GetPrefixLen()) > stored {
						t.Errorf("prefix_len %d of a chain with %d blocks stored", lr.GetPrefixLen(), stored)
					}
				}
				if gs, err := c.Get(ctx, &kvcachev1.GetRequest{Namespace: testNS, Keys: keys[:2]}); err == nil {
					for {
						if _, err := gs.Recv(); err != nil {
							break
						}
					}
				}
			}
		})
	}
	// Hostile traffic while the workers run.
	wg.Go(func() {
		big := make([][]byte, 1<<16)
		for i := range big {
			big[i] = key(fmt.Sprint("big", i))
		}
		for written.Load() < 3*capacity {
			for range 4 { // stalled uploads: announce 8 MiB, send 3, go quiet
				st, err := c.Put(ctx)
				if err != nil {
					continue
				}
				for off := 0; off < 3<<20; off += 1 << 20 {
					m := &kvcachev1.PutRequest{Offset: uint32(off), Data: make([]byte, 1<<20)}
					if off == 0 {
						m.Namespace, m.Key, m.BlockSize = testNS, key(fmt.Sprint("stall", off)), 8<<20
					}
					if st.Send(m) != nil {
						break
					}
				}
			}
			self := key("self")
			if res, err := putBlocks(ctx, c, [][]byte{self}, [][]byte{soakBlock(t, 1, self)}); err != nil || codes.Code(res[0].GetCode()) != codes.InvalidArgument && codes.Code(res[0].GetCode()) != codes.ResourceExhausted {
				t.Errorf("self-parent block: %v, %v", res, err)
			}
			if _, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: testNS, Keys: big}); err != nil && status.Code(err) != codes.ResourceExhausted {
				t.Errorf("big Lookup: %v", err)
			}
		}
	})
	wg.Wait()
	close(stopSample)
	sampler.Wait()
	st, err := c.Stats(ctx, &kvcachev1.StatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("soak: %d MiB stored into %d MiB, %d evictions; %d of %d chains reachable; peak heap %d MiB (limit %d), peak file on disk %d KiB",
		written.Load()>>20, capacity>>20, st.GetEvictions(), reachable.Load(), chains.Load(), peakHeap.Load()>>20, memLimit>>20, peakDisk.Load()>>10)
	if peakHeap.Load() > memLimit {
		t.Errorf("heap peaked at %d MiB, over the %d MiB limit", peakHeap.Load()>>20, memLimit>>20)
	}
	// The store keeps its files within capacity + 10% (store.Options.
	// Capacity): diskBytes counts what they take on disk, both files.
	if limit := int64(capacity + capacity/10); peakDisk.Load() > limit {
		t.Errorf("files took %d KiB on disk, over capacity + 10%% (%d KiB)", peakDisk.Load()>>10, limit>>10)
	}
	if st.GetBytesUsed() > capacity || reachable.Load() < chains.Load()*9/10 {
		t.Errorf("store %d of %d bytes, %d of %d chains reachable", st.GetBytesUsed(), capacity, reachable.Load(), chains.Load())
	}
	cancel()
	cc.Close()
	n.Stop(t)
}
