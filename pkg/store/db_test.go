package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

var ctx = context.Background()

// openDB opens a store in t.TempDir() and, on cleanup, closes it and runs
// bbolt's consistency check over the file.
func openDB(t testing.TB, opts *store.Options) (*store.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, f := range store.Files(path) {
			checkFile(t, f)
		}
	})
	return db, path
}

// checkFile runs bbolt's integrity check (page accounting, b-tree order).
func checkFile(t testing.TB, path string) {
	t.Helper()
	b, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("integrity check: open: %v", err)
		return
	}
	defer b.Close()
	if err := b.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("integrity check: %v", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

func TestDBConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, opts *store.Options) store.Store {
		db, _ := openDB(t, opts)
		return db
	})
}

func TestDBReopen(t *testing.T) {
	var clk storetest.Clock
	opts := &store.Options{Verify: storetest.Verify, Now: clk.Now, Capacity: 3 * 200, AccessFlushInterval: -1}
	db, path := openDB(t, opts)
	ns := storetest.Namespace("a")
	keys := []prefix.Key{storetest.Key("a"), storetest.Key("b"), storetest.Key("c")}
	blocks := make([][]byte, len(keys))
	for i, k := range keys {
		clk.Set(int64(i + 1))
		blocks[i] = storetest.Block(nil, storetest.Payload(k.String(), 200-39))
		if _, err := db.Put(ctx, ns, k, blocks[i]); err != nil {
			t.Fatal(err)
		}
	}
	clk.Set(10)
	if _, err := db.Get(ctx, ns, keys[0], nil); err != nil { // a is now the newest
		t.Fatal(err)
	}
	before := db.Stats()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := store.Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	after := db.Stats()
	if after.Blocks != before.Blocks || after.BytesUsed != before.BytesUsed || after.FileBytes != before.FileBytes {
		t.Errorf("Stats after reopen = %+v; before %+v", after, before)
	}
	// The access times were flushed on Close: a fourth block evicts b
	// (last access 2), not a (10) or c (3).
	clk.Set(20)
	if _, err := db.Put(ctx, ns, storetest.Key("d"), storetest.Block(nil, storetest.Payload("d", 200-39))); err != nil {
		t.Fatal(err)
	}
	found, _ := db.Contains(ctx, ns, keys)
	if fmt.Sprint(found) != "[true false true]" {
		t.Errorf("after eviction present = %v, want [true false true]", found)
	}
	// AppendContains answers the same into a reused buffer, whatever
	// was in it.
	buf := []bool{false, true, false, true, true}
	found, err = db.AppendContains(ctx, ns, keys, buf)
	if fmt.Sprint(found) != "[true false true]" || err != nil || &found[0] != &buf[0] {
		t.Errorf("AppendContains = %v, %v (own storage: %v), want [true false true] in the buffer", found, err, &found[0] == &buf[0])
	}
	for _, i := range []int{0, 2} {
		got, err := db.Get(ctx, ns, keys[i], nil)
		if err != nil || !bytes.Equal(got, blocks[i]) {
			t.Errorf("Get(%d) after reopen: %v", i, err)
		}
	}
}

const (
	crashEnv      = "STORE_CRASH_CHILD_PATH"
	crashStartEnv = "STORE_CRASH_CHILD_START"
)

// crashBlock is the block the crash child writes for i.
func crashBlock(i int) (prefix.Key, []byte) {
	k := storetest.Key(fmt.Sprint("crash/", i))
	return k, storetest.Block(nil, storetest.Payload(k.String(), 4096+i*997%65536))
}

// TestCrashChild is the child of TestKill9Durability: it puts blocks from
// several goroutines forever and prints the index of each one acknowledged.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashEnv)
	if path == "" {
		t.Skip("run by TestKill9Durability")
	}
	db, err := store.Open(path, &store.Options{Verify: storetest.Verify})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	ns := storetest.Namespace("crash")
	var start int
	fmt.Sscan(os.Getenv(crashStartEnv), &start)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	const writers = 4
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := start + w; ; i += writers {
				k, b := crashBlock(i)
				if _, err := db.Put(ctx, ns, k, b); err != nil {
					fmt.Println("put:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(out, i)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestKill9Durability re-executes the test binary as a child that puts
// blocks, kills it with SIGKILL in mid-stream and checks that every block it
// acknowledged is in the reopened file with the right bytes.
//
// kill -9 keeps the page cache, so this proves that acknowledgement follows
// the commit (and that a torn commit is recovered), not that fsync reached
// the disk; the latter is bbolt's and the kernel's contract.
func TestKill9Durability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "crash.db")
	var acked []int        // over both rounds
	for round := range 2 { // the second round appends to a file recovered once
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v=false")
		cmd.Env = append(os.Environ(), crashEnv+"="+path, fmt.Sprint(crashStartEnv, "=", round*1_000_000))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		for n := 0; n < 150 && sc.Scan(); n++ {
			var i int
			if _, err := fmt.Sscan(sc.Text(), &i); err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			acked = append(acked, i)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() { // acknowledgements printed before the kill landed
			var i int
			if _, err := fmt.Sscan(sc.Text(), &i); err == nil {
				acked = append(acked, i)
			}
		}
		err = cmd.Wait()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("child: %v, want killed by SIGKILL", err)
		}
		if len(acked) < 150*(round+1) {
			t.Fatalf("child acknowledged only %d blocks", len(acked)-150*round)
		}

		for _, f := range store.Files(path) {
			checkFile(t, f)
		}
		db, err := store.Open(path, &store.Options{Verify: storetest.Verify})
		if err != nil {
			t.Fatal(err)
		}
		ns := storetest.Namespace("crash")
		var buf []byte
		for _, i := range acked {
			k, want := crashBlock(i)
			if buf, err = db.Get(ctx, ns, k, buf); err != nil || !bytes.Equal(buf, want) {
				t.Errorf("round %d: acknowledged block %d: %v", round, i, err)
			}
		}
		t.Logf("round %d: %d acknowledged blocks survived kill -9; %d blocks in file", round, len(acked), db.Stats().Blocks)
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDBCancelRace cancels Puts at random points of the group commit: a Put
// that reports its context's error must have stored nothing, and one that
// reports success must be readable.
func TestDBCancelRace(t *testing.T) {
	db, _ := openDB(t, &store.Options{Verify: storetest.Verify})
	ns := storetest.Namespace("cancel")
	var wg sync.WaitGroup
	var cancelled, stored atomic.Int64
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				k := storetest.Key(fmt.Sprint(w, "/", i))
				cctx, cancel := context.WithTimeout(ctx, time.Duration(i%5)*100*time.Microsecond)
				ok, err := db.Put(cctx, ns, k, storetest.Block(nil, storetest.Payload(k.String(), 64<<10)))
				cancel()
				found, cerr := db.Contains(ctx, ns, []prefix.Key{k})
				switch {
				case cerr != nil:
					t.Error(cerr)
				case err == nil && ok && found[0]:
					stored.Add(1)
				case errors.Is(err, context.DeadlineExceeded) && !found[0]:
					cancelled.Add(1)
				default:
					t.Errorf("Put = %v, %v but present = %v", ok, err, found[0])
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d stored, %d cancelled", stored.Load(), cancelled.Load())
	if st := db.Stats(); st.Blocks != stored.Load() {
		t.Errorf("Blocks = %d, want %d", st.Blocks, stored.Load())
	}
}
