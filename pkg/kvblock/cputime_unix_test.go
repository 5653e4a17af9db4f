//go:build unix

package kvblock

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user + system) this process has used. The
// decode benchmarks report CPU time per op beside wall time: on a loaded
// machine the wall time measures the neighbours too.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
