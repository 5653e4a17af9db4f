//go:build unix

package model

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time: unlike wall time it does
// not grow while other processes hold the cores.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op since since (a cpuTime value).
func reportCPU(b *testing.B, since time.Duration) {
	b.ReportMetric(float64(cpuTime()-since)/1e3/float64(b.N), "cpu_us/op")
}
