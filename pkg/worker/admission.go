package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// errQueueFull rejects a request when MaxRunning requests run and
// MaxQueue wait; the HTTP layer answers 429 with Retry-After.
var errQueueFull = errors.New("worker: too many requests: the wait queue is full")

// admission bounds the generation requests in the worker: at most
// MaxRunning run (interleaved on the forward-pass slots), at most MaxQueue
// wait for one of those places, and the rest are turned away at once, so
// a flood costs a 429 each instead of making every request slow. Waiting
// is abandoned as soon as the client goes away.
type admission struct {
	slots chan struct{}
	met   *metrics

	mu       sync.Mutex
	waiting  int
	maxQueue int
}

func newAdmission(running, queue int, met *metrics) *admission {
	met.runningLimit.Set(float64(running))
	met.queueLimit.Set(float64(queue))
	return &admission{slots: make(chan struct{}, running), maxQueue: queue, met: met}
}

// acquire admits a request, waiting in the queue if every running place is
// taken. It returns the time spent waiting; the caller must call release
// once when the request is over.
func (a *admission) acquire(ctx context.Context) (time.Duration, error) {
	select {
	case a.slots <- struct{}{}:
		a.met.running.Inc()
		return 0, nil
	default:
	}
	a.mu.Lock()
	if a.waiting >= a.maxQueue {
		a.mu.Unlock()
		a.met.rejected.WithLabelValues("queue_full").Inc()
		return 0, errQueueFull
	}
	a.waiting++
	a.met.waiting.Set(float64(a.waiting))
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.waiting--
		a.met.waiting.Set(float64(a.waiting))
		a.mu.Unlock()
	}()
	start := time.Now()
	select {
	case a.slots <- struct{}{}:
		a.met.running.Inc()
		return time.Since(start), nil
	case <-ctx.Done():
		a.met.rejected.WithLabelValues("client_gone").Inc()
		return time.Since(start), fmt.Errorf("worker: left the wait queue: %w", ctx.Err())
	}
}

func (a *admission) release() {
	<-a.slots
	a.met.running.Dec()
}
