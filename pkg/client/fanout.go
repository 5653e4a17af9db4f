package client

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
)

// defaultHedgeAfter is how long a read waits for the first answer of a
// node before it also asks the next replica. Lookups answer in well under
// a millisecond, so 50ms of silence means a node that is gone or stalled
// (a dead host's address often drops packets instead of refusing them).
const defaultHedgeAfter = 50 * time.Millisecond

// errSlow marks a node that left a read unanswered past the hedge delay.
var errSlow = errors.New("no answer within the hedge delay")

// progress is when a call last heard from its node. fanout hedges a call
// only after HedgeAfter of silence: a large fetch that keeps streaming is
// slow because it is big, but one that stops mid-stream (its node died)
// is as stuck as one that never started. Calls get it as an argument and
// note every message; a nil *progress notes nothing.
type progress struct{ heard atomic.Int64 } // unix nanos

func (p *progress) note() {
	if p != nil {
		p.heard.Store(time.Now().UnixNano())
	}
}

func (p *progress) last() time.Time { return time.Unix(0, p.heard.Load()) }

// fanout resolves keys by asking their owners, in read order, in parallel,
// one call per node. A key a node misses or cannot answer is asked of its
// next owner; so is every key of a call that has heard nothing from its
// node for the hedge delay, while that call goes on. want reports the
// keys still worth asking (unresolved keys that matter); merge takes each
// call's result. want and merge run on fanout's goroutine only, so the
// caller's result arrays need no lock. first tells call that no other call
// has asked for any of its keys, so it may use the caller's buffers.
//
// fanout returns once no wanted key has a call in flight or an owner left
// to ask, after cancelling and waiting for calls no longer needed, so no
// call outlives it. A call notes its progress in prog; a call silent for
// hedgeAfter (> 0) has its keys asked of their next owners and its node
// reported to suspect.
func fanout[R any](ctx context.Context, hedgeAfter time.Duration, suspect func(node string, err error),
	owners [][]string, want func() []int,
	call func(ctx context.Context, node string, idx []int, first bool, prog *progress) (R, error),
	merge func(node string, idx []int, r R, err error)) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type flight struct {
		node   string
		idx    []int
		prog   progress // the last news from the node, or the start
		hedged bool
	}
	type result struct {
		f   *flight
		r   R
		err error
	}
	results := make(chan result)
	next := make([]int, len(owners))     // rank of the next owner to ask, per key
	inflight := make([]int, len(owners)) // calls asking for the key
	flights := map[*flight]struct{}{}

	launch := func(keys []int) {
		groups := map[string][]int{}
		var order []string
		for _, i := range keys {
			if next[i] >= len(owners[i]) {
				continue
			}
			n := owners[i][next[i]]
			next[i]++
			if _, ok := groups[n]; !ok {
				order = append(order, n)
			}
			groups[n] = append(groups[n], i)
		}
		for _, n := range order {
			f := &flight{node: n, idx: groups[n]}
			f.prog.note()
			first := true
			for _, i := range f.idx {
				inflight[i]++
				first = first && next[i] == 1
			}
			flights[f] = struct{}{}
			go func() {
				r, err := call(cctx, f.node, f.idx, first, &f.prog)
				results <- result{f, r, err}
			}()
		}
	}
	// pending reports whether waiting can still resolve a wanted key.
	pending := func(wanted []int) bool {
		for _, i := range wanted {
			if inflight[i] > 0 || next[i] < len(owners[i]) {
				return true
			}
		}
		return false
	}

	launch(want())
	hedge := hedgeAfter
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for len(flights) > 0 {
		wanted := want()
		if !pending(wanted) {
			break
		}
		// Arm the timer for the call silent the longest.
		var oldest int64
		for f := range flights {
			if h := f.prog.heard.Load(); !f.hedged && (oldest == 0 || h < oldest) {
				oldest = h
			}
		}
		var hedgeC <-chan time.Time
		if hedge > 0 && oldest != 0 {
			timer.Reset(time.Until(time.Unix(0, oldest).Add(hedge)))
			hedgeC = timer.C
		}
		select {
		case res := <-results:
			delete(flights, res.f)
			for _, i := range res.f.idx {
				inflight[i]--
			}
			merge(res.f.node, res.f.idx, res.r, res.err)
			var again []int
			for _, i := range want() {
				if inflight[i] == 0 {
					again = append(again, i)
				}
			}
			launch(again)
		case <-hedgeC:
			isWanted := map[int]bool{}
			for _, i := range wanted {
				isWanted[i] = true
			}
			var again []int
			for f := range flights {
				if f.hedged || time.Since(f.prog.last()) < hedge {
					continue
				}
				f.hedged = true
				suspect(f.node, errSlow)
				for _, i := range f.idx {
					if isWanted[i] {
						again = append(again, i)
						isWanted[i] = false // once per key per hedge
					}
				}
			}
			launch(again)
		case <-ctx.Done():
			// cancel below; the drain waits for calls to notice.
		}
		timer.Stop() // since Go 1.23 no stale tick can follow a Stop
		if ctx.Err() != nil {
			break
		}
	}
	cancel()
	for len(flights) > 0 {
		res := <-results
		delete(flights, res.f)
	}
}
