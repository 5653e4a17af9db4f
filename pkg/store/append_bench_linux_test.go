package store_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// BenchmarkAppend16Writers is the durable append path of `make bench`
// (kvbench's 1 MiB target blocks, 16 writers) on the store alone, with
// the disk's own ceiling measured in the same run as the baseline (before
// and after the store, averaged, as other work on the machine drifts): the
// same bytes appended by one goroutine to a file in batches of 16 blocks,
// each batch fdatasync'd, which is what a group commit of 16 writers costs
// at best when it does not overlap one batch's writes with another's
// sync. x-disk is the store's rate over that ceiling.
func BenchmarkAppend16Writers(b *testing.B) {
	const writers, size = 16, 1 << 20
	blocks := make([][]byte, 4)
	for i := range blocks {
		blocks[i] = storetest.Block(nil, storetest.Payload(fmt.Sprint(i), size-39))
	}
	dir := b.TempDir()
	before, err := diskCeiling(filepath.Join(dir, "ceiling.dat"), blocks[0], b.N, writers)
	if err != nil {
		b.Fatal(err)
	}
	db, err := store.Open(filepath.Join(dir, "bench.db"), &store.Options{Verify: storetest.Verify})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	b.ResetTimer()
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				if _, err := db.Put(ctx, benchNS, benchKey(i), blocks[i%len(blocks)]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(t0)
	b.StopTimer()
	commits, ops := store.CommitCounts(db)
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	after, err := diskCeiling(filepath.Join(dir, "ceiling.dat"), blocks[0], b.N, writers)
	if err != nil {
		b.Fatal(err)
	}
	disk := (before + after) / 2
	rate := float64(b.N) * size / el.Seconds() / 1e9
	b.ReportMetric(rate, "GB/s")
	b.ReportMetric(disk, "disk-GB/s")
	b.ReportMetric(rate/disk, "x-disk")
	b.ReportMetric(float64(ops)/float64(commits), "ops/commit")
}

// diskCeiling appends n copies of block to a new file at path,
// fdatasync'ing after every batch of them, and returns GB/s. Like
// bbolt's, the file is not preallocated.
func diskCeiling(path string, block []byte, n, batch int) (float64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer os.Remove(path)
	defer f.Close()
	total := int64(n) * int64(len(block))
	t0 := time.Now()
	for i := range n {
		if _, err := f.WriteAt(block, int64(i)*int64(len(block))); err != nil {
			return 0, err
		}
		if (i+1)%batch == 0 || i == n-1 {
			if err := syscall.Fdatasync(int(f.Fd())); err != nil {
				return 0, err
			}
		}
	}
	return float64(total) / time.Since(t0).Seconds() / 1e9, nil
}
