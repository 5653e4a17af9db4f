// Command enginebench measures the transformer engine (pkg/model) on a
// random-weight 125M-parameter Llama GGUF, side by side with llama.cpp's
// llama-bench when it is on PATH. See internal/enginebench.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvcache/kvcache/internal/enginebench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := enginebench.Main(ctx, os.Stdout, os.Stderr, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "enginebench:", err)
		if errors.Is(err, enginebench.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
