// Command kvctl is the operator CLI of a kvcache cluster.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/kvcache/kvcache/internal/kvctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := kvctl.Main(ctx, &kvctl.Env{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvctl:", err)
		if errors.Is(err, kvctl.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
