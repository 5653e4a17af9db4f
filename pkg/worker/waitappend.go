package worker

import (
	"context"
	"time"
)

// waitAppend blocks, with Config.WaitAppend, until done is closed (the
// request's append was answered, failed or dropped), PutTimeout passes or
// ctx ends, so that the same prompt sent next is a hit. Without
// WaitAppend, or with nothing queued (done nil), it returns at once.
func (w *Worker) waitAppend(ctx context.Context, done <-chan struct{}) {
	if !w.cfg.WaitAppend || done == nil {
		return
	}
	t := time.NewTimer(w.cfg.PutTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		w.log.Debug("gave up waiting for the append", "after", w.cfg.PutTimeout)
	case <-ctx.Done():
	}
}
