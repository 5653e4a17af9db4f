package kvbench

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// progress shows what a phase is doing: on a terminal a line rewritten in
// place (\r) every 200 ms, otherwise one line when the phase ends.
type progress struct {
	w     io.Writer
	tty   bool
	mu    sync.Mutex
	label string
	total int64 // expected units (0 = unknown)
	bytes atomic.Int64
	ops   atomic.Int64
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// begin starts a phase; total is the expected op count, 0 if unknown.
func (p *progress) begin(label string, total int64) {
	if p == nil || p.w == nil {
		return
	}
	p.end()
	p.mu.Lock()
	p.label, p.total, p.start = label, total, time.Now()
	p.bytes.Store(0)
	p.ops.Store(0)
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	p.mu.Unlock()
	go func(stop, done chan struct{}) {
		defer close(done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if p.tty {
					fmt.Fprintf(p.w, "\r\033[K%s", p.line())
				}
			}
		}
	}(p.stop, p.done)
}

func (p *progress) add(ops, bytes int64) {
	if p == nil {
		return
	}
	p.ops.Add(ops)
	p.bytes.Add(bytes)
}

func (p *progress) line() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	el := time.Since(p.start).Seconds()
	s := fmt.Sprintf("%-44s %6.1fs", p.label, el)
	if p.total > 0 {
		s += fmt.Sprintf("  %d/%d", p.ops.Load(), p.total)
	} else if n := p.ops.Load(); n > 0 {
		s += fmt.Sprintf("  %d ops", n)
	}
	if b := p.bytes.Load(); b > 0 && el > 0 {
		s += fmt.Sprintf("  %s  %.2f GB/s", fmtBytes(float64(b)), float64(b)/el/1e9)
	}
	return s
}

// end finishes the current phase's line.
func (p *progress) end() {
	if p == nil || p.w == nil || p.stop == nil {
		return
	}
	close(p.stop)
	<-p.done
	p.stop = nil
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s\n", p.line())
	} else {
		fmt.Fprintln(p.w, p.line())
	}
}

// note prints a line between phases.
func (p *progress) note(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	fmt.Fprintf(p.w, format+"\n", args...)
}
