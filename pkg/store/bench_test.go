package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// putter is what BenchmarkPut16Writers drives: the store, or a baseline.
type putter interface {
	put(i int, block []byte) error
	close() error
}

type storePutter struct{ db *store.DB }

func (p storePutter) put(i int, block []byte) error {
	_, err := p.db.Put(ctx, benchNS, benchKey(i), block)
	return err
}
func (p storePutter) close() error { return p.db.Close() }

// batchPutter is a baseline on db.Batch with MaxBatchSize = writers; flat
// puts every block as a value of one bucket (the layout the store avoids),
// otherwise each block gets its own nested bucket as in the store.
type batchPutter struct {
	db   *bbolt.DB
	flat bool
}

func (p batchPutter) put(i int, block []byte) error {
	if _, _, err := storetest.Verify(block); err != nil { // same CPU work as the store
		return err
	}
	k := benchKey(i)
	id := append(benchNS[:len(benchNS):len(benchNS)], k[:]...)
	return p.db.Batch(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("blocks"))
		if err != nil {
			return err
		}
		if p.flat {
			return b.Put(id, block)
		}
		nb, err := b.CreateBucket(id)
		if err != nil {
			return err
		}
		return nb.Put([]byte("v"), block)
	})
}
func (p batchPutter) close() error { return p.db.Close() }

var benchNS = storetest.Namespace("bench")

func benchKey(i int) prefix.Key { return storetest.Key(fmt.Sprint("bench/", i)) }

// ioWriteBytes is this process's write_bytes from /proc/self/io: bytes it
// caused to be sent to the storage layer, fsync'd pages included.
func ioWriteBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	i := bytes.Index(b, []byte("\nwrite_bytes: "))
	if i < 0 {
		return 0
	}
	var n int64
	fmt.Sscan(string(b[i+len("\nwrite_bytes: "):]), &n)
	return n
}

// filesSize is the total size of the files of a store at path (Files;
// the baselines have only the first).
func filesSize(path string) int64 {
	var n int64
	for _, f := range store.Files(path) {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// BenchmarkPut16Writers measures durable Puts from 16 goroutines, for the
// store (own group commit, one nested bucket per block) and two db.Batch
// baselines: the same layout, and all blocks in one flat bucket. io-amp is
// bytes written to storage per block byte, file-amp the file's growth per
// block byte.
func BenchmarkPut16Writers(b *testing.B) {
	const writers = 16
	for _, size := range []int{512 << 10, 4 << 20} {
		blocks := make([][]byte, 4)
		for i := range blocks {
			blocks[i] = storetest.Block(nil, storetest.Payload(fmt.Sprint(i), size-39))
		}
		for _, layout := range []string{"store", "batch-nested", "batch-flat"} {
			b.Run(fmt.Sprintf("%s/%dKiB", layout, size>>10), func(b *testing.B) {
				path := filepath.Join(b.TempDir(), "bench.db")
				var p putter
				switch layout {
				case "store":
					db, err := store.Open(path, &store.Options{Verify: storetest.Verify})
					if err != nil {
						b.Fatal(err)
					}
					p = storePutter{db}
				default:
					db, err := bbolt.Open(path, 0o600, &bbolt.Options{
						FreelistType: bbolt.FreelistMapType, NoFreelistSync: true, InitialMmapSize: 1 << 30})
					if err != nil {
						b.Fatal(err)
					}
					db.MaxBatchSize = writers
					p = batchPutter{db: db, flat: layout == "batch-flat"}
				}
				size0 := filesSize(path)
				io0 := ioWriteBytes()
				b.SetBytes(int64(size))
				b.ResetTimer()
				var next atomic.Int64
				var wg sync.WaitGroup
				for range writers {
					wg.Go(func() {
						for {
							i := int(next.Add(1)) - 1
							if i >= b.N {
								return
							}
							if err := p.put(i, blocks[i%len(blocks)]); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				if sp, ok := p.(storePutter); ok {
					commits, ops := store.CommitCounts(sp.db)
					b.ReportMetric(float64(ops)/float64(commits), "ops/commit")
				}
				written := float64(b.N) * float64(size)
				b.ReportMetric(float64(ioWriteBytes()-io0)/written, "io-amp")
				b.ReportMetric(float64(filesSize(path)-size0)/written, "file-amp")
				if err := p.close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

// fill puts n blocks of size bytes (NoSync store), 16 at a time.
func fill(b *testing.B, db *store.DB, ns prefix.Namespace, keys []prefix.Key, size int) {
	b.Helper()
	block := storetest.Block(nil, storetest.Payload("fill", size-39))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < len(keys); i = int(next.Add(1)) - 1 {
				if _, err := db.Put(ctx, ns, keys[i], block); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func keyRange(name string, n int) []prefix.Key {
	keys := make([]prefix.Key, n)
	for i := range keys {
		keys[i] = storetest.Key(fmt.Sprint(name, "/", i))
	}
	return keys
}

// BenchmarkGetWarm reads 1 MiB blocks that are in the page cache, copying
// them out into a reused buffer, from GOMAXPROCS goroutines.
func BenchmarkGetWarm(b *testing.B) {
	const size = 1 << 20
	db, _ := openDB(b, &store.Options{Verify: storetest.Verify, NoSync: true})
	keys := keyRange("warm", 256)
	fill(b, db, benchNS, keys, size)
	b.SetBytes(size)
	b.ResetTimer()
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 0, size)
		for pb.Next() {
			var err error
			if buf, err = db.Get(ctx, benchNS, keys[next.Add(1)%int64(len(keys))], buf); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkLookup512 asks for the longest present prefix of a 512-key
// chain, all present, in a store of 16 Ki blocks, and reports latency
// percentiles. The baseline, bbolt-seek, answers the same question the way
// the store did before its in-memory index did: a bbolt read transaction
// and a cursor seek per key, over a file holding the same 16 Ki keys.
func BenchmarkLookup512(b *testing.B) {
	other, keys := keyRange("other", 16<<10-512), keyRange("lookup", 512)
	b.Run("store", func(b *testing.B) {
		db, _ := openDB(b, &store.Options{Verify: storetest.Verify, NoSync: true})
		fill(b, db, storetest.Namespace("other"), other, 1024)
		fill(b, db, benchNS, keys, 1024)
		lookupLatency(b, func() (int, error) { return db.Lookup(ctx, benchNS, keys) }, len(keys))
	})
	b.Run("bbolt-seek", func(b *testing.B) {
		bdb, err := bbolt.Open(filepath.Join(b.TempDir(), "seek.db"), 0o600, &bbolt.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer bdb.Close()
		id := func(ns prefix.Namespace, k prefix.Key) []byte { return append(ns[:len(ns):len(ns)], k[:]...) }
		if err := bdb.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucket([]byte("blocks"))
			for _, k := range other {
				if err == nil {
					err = bk.Put(id(storetest.Namespace("other"), k), []byte("v"))
				}
			}
			for _, k := range keys {
				if err == nil {
					err = bk.Put(id(benchNS, k), []byte("v"))
				}
			}
			return err
		}); err != nil {
			b.Fatal(err)
		}
		lookupLatency(b, func() (n int, err error) {
			err = bdb.View(func(tx *bbolt.Tx) error {
				c := tx.Bucket([]byte("blocks")).Cursor()
				for _, k := range keys {
					want := id(benchNS, k)
					if got, _ := c.Seek(want); !bytes.Equal(got, want) {
						return nil
					}
					n++
				}
				return nil
			})
			return n, err
		}, len(keys))
	})
}

// lookupLatency times b.N calls of lookup, each of which must answer want,
// and reports the median and 99th percentile.
func lookupLatency(b *testing.B, lookup func() (int, error), want int) {
	durs := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		n, err := lookup()
		durs = append(durs, time.Since(t0))
		if n != want || err != nil {
			b.Fatalf("Lookup = %d, %v; want %d", n, err, want)
		}
	}
	b.StopTimer()
	slices.Sort(durs)
	pct := func(p float64) float64 { return float64(durs[int(p*float64(len(durs)-1))].Microseconds()) }
	b.ReportMetric(pct(0.5), "p50-us")
	b.ReportMetric(pct(0.99), "p99-us")
}
