package cachenode

import (
	"bufio"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"
)

// readLimiter bounds the Lookup and Get calls in progress, each kind to
// its own limit. It runs as grpc's InTapHandle, before the request message
// is read, so a refused call costs neither the memory of its (up to
// 65,536-key) request nor a goroutine: it gets ResourceExhausted at once.
// Its slot is freed when the stream's context ends, which grpc does for
// every stream it accepted, however it ends.
type readLimiter struct {
	limit            int64
	lookups, gets    atomic.Int64
	onRefused        func(method string)
	lookupMeth, gMth string
}

func newReadLimiter(limit int, onRefused func(string)) *readLimiter {
	return &readLimiter{limit: int64(limit), onRefused: onRefused,
		lookupMeth: kvcachev1.KVCacheService_Lookup_FullMethodName, gMth: kvcachev1.KVCacheService_Get_FullMethodName}
}

func (l *readLimiter) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	var n *atomic.Int64
	switch info.FullMethodName {
	case l.lookupMeth:
		n = &l.lookups
	case l.gMth:
		n = &l.gets
	default:
		return ctx, nil
	}
	if n.Add(1) > l.limit {
		n.Add(-1)
		if l.onRefused != nil {
			l.onRefused(info.FullMethodName)
		}
		return ctx, status.Errorf(codes.ResourceExhausted, "node busy: %d %s calls in progress (--max-reads); retry", l.limit, info.FullMethodName)
	}
	context.AfterFunc(ctx, func() { n.Add(-1) })
	return ctx, nil
}

// defaultReads is the default of Config.MaxReads: the calls are CPU work
// measured in microseconds to milliseconds, so more than a few per core
// only queue, and each may hold a 65,536-key request (about 6 MiB).
func defaultReads() int { return max(16, 4*runtime.GOMAXPROCS(0)) }

// physicalMemory is the memory this process may use: the cgroup limit
// when there is one, else the machine's, else 0 when neither is known.
func physicalMemory() int64 {
	var total int64
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				total = kb << 10
			}
		}
		f.Close()
	}
	for _, p := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && v > 0 && (total == 0 || v < total) {
			total = v
		}
	}
	return total
}
