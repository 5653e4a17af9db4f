// Command kvbench benchmarks the kvcache data path (append, lookup, fetch,
// decode) with a realistic prefix-sharing workload, side by side with Redis.
// See internal/kvbench.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvcache/kvcache/internal/kvbench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := kvbench.Main(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvbench:", err)
		if errors.Is(err, kvbench.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
