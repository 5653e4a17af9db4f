package client

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// caller runs calls against nodes: it owns the node records, bounds every
// attempt by the call timeout, retries transient failures and reports
// nodes that failed to membership.
type caller struct {
	peers   *peers
	timeout time.Duration
	retries int
	suspect func(addr string, err error)
}

// attempt runs an idempotent call against one node with a per-attempt
// deadline, retrying transient failures with a short backoff.
func (k *caller) attempt(ctx context.Context, addr string, call func(context.Context, *peer) error) error {
	return k.attemptUntil(ctx, addr, func(ctx context.Context, dl time.Time, n *peer) error {
		actx, cancel := context.WithDeadline(ctx, dl)
		defer cancel()
		return call(actx, n)
	})
}

// attemptUntil is attempt for a call that takes its attempt's deadline
// as dl instead of in ctx (which holds only the caller's): it must give
// up by dl. A data-plane exchange sets it on its socket, which saves the
// context, timer and cancel func of a context.WithDeadline per attempt.
func (k *caller) attemptUntil(ctx context.Context, addr string, call func(ctx context.Context, dl time.Time, n *peer) error) error {
	n, err := k.peers.get(addr)
	if err != nil {
		return err
	}
	backoff := 10 * time.Millisecond
	for try := 0; ; try++ {
		dl := time.Now().Add(k.timeout)
		if cdl, ok := ctx.Deadline(); ok && cdl.Before(dl) {
			dl = cdl
		}
		err = wrapRPC(addr, call(ctx, dl, n))
		if err == nil || !retryable(err) || try >= k.retries || ctx.Err() != nil {
			if ctx.Err() != nil && err != nil {
				// A caller's deadline that ran out on this node (not a
				// cancellation) says the node is slow or gone: read
				// elsewhere first until a health check clears it.
				if errors.Is(ctx.Err(), context.DeadlineExceeded) && retryable(err) {
					k.suspect(addr, err)
				}
				return fmt.Errorf("%w (%w)", ctx.Err(), err)
			}
			if err != nil && retryable(err) {
				k.suspect(addr, err)
			}
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
