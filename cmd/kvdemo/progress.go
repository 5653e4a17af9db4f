package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress tells the user what the demo is doing while it does it, each
// line stamped with the time since the demo started: a first prefill of a
// long prompt on a loaded machine takes many seconds and must not look
// like a hang.
type progress struct {
	mu    sync.Mutex
	w     io.Writer
	start time.Time
	every time.Duration // heartbeat interval of during
}

func newProgress(w io.Writer, every time.Duration) *progress {
	return &progress{w: w, start: time.Now(), every: every}
}

func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "[%5.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// during prints what once, then "what: still running after Ns" every
// p.every until the returned stop is called.
func (p *progress) during(what string) (stop func()) {
	p.printf("%s", what)
	done := make(chan struct{})
	finished := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(finished)
		tick := time.NewTicker(p.every)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				p.printf("%s: still running after %.0fs", what, time.Since(t0).Seconds())
			}
		}
	}()
	return func() { close(done); <-finished }
}
