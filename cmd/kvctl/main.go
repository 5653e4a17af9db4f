// Command kvctl is the operator CLI of a kvcache cluster. See internal/kvctl.
package main

import (
	"context"
	"os"
	"os/signal"

	"github.com/kvcache/kvcache/internal/kvctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code := kvctl.Run(ctx, &kvctl.Env{Stdout: os.Stdout, Stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}
