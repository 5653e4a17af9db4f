package client

import (
	"context"
	"errors"
	"slices"
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

// fanJob is one read, as fanout drives it. want appends to dst[:0] the
// keys still worth asking (unresolved keys that matter); call asks one
// node for keys idx; merge takes each call's result. want and merge run on
// fanout's goroutine only, so the job's result arrays need no lock. first
// tells call that no other call has asked for any of its keys, so it may
// use the caller's buffers. idx is fanout's: call and merge may read it
// but not keep it past fanout's return.
type fanJob[R any] interface {
	want(dst []int) []int
	call(ctx context.Context, node string, idx []int, first bool, prog *progress) (R, error)
	merge(node string, idx []int, r R, err error)
}

// funcJob is a fanJob of three functions.
type funcJob[R any] struct {
	wantF  func(dst []int) []int
	callF  func(ctx context.Context, node string, idx []int, first bool, prog *progress) (R, error)
	mergeF func(node string, idx []int, r R, err error)
}

func (j funcJob[R]) want(dst []int) []int { return j.wantF(dst) }
func (j funcJob[R]) call(ctx context.Context, node string, idx []int, first bool, prog *progress) (R, error) {
	return j.callF(ctx, node, idx, first, prog)
}
func (j funcJob[R]) merge(node string, idx []int, r R, err error) { j.mergeF(node, idx, r, err) }

// flight is one call of a fanout: its node (an index into the
// placement's nodes), its keys and, once it has returned, its result.
type flight[R any] struct {
	node   int32
	idx    []int
	prog   progress // the last news from the node, or the start
	hedged bool
	r      R
	err    error
}

// fanState is fanout's working memory. It is reusable (the next fanout
// clears what it reads) once fanout has returned, because no call
// outlives fanout: a pooled read keeps one, so a read allocates none of
// it.
type fanState[R any] struct {
	results  chan *flight[R]
	flights  []*flight[R] // in flight
	free     []*flight[R] // returned, for reuse by this fanout or the next
	next     []int32      // per key: rank of the next owner to ask
	inflight []int32      // per key: calls asking for it
	wanted   []int
	again    []int
	isWanted []bool // per key, the hedge's
	arena    []int  // the idx of this fanout's flights, end to end
	launchN  []int32
	cnt      []int // per node: keys in this launch, then their end in arena
	order    []int32
	timer    *time.Timer
}

// fanout resolves the keys of pl by asking their owners, in read order,
// in parallel, one call per node. A key a node misses or cannot answer is
// asked of its next owner; so is every key of a call that has heard
// nothing from its node for the hedge delay, while that call goes on.
//
// fanout returns once no wanted key has a call in flight or an owner left
// to ask, after cancelling and waiting for calls no longer needed, so no
// call outlives it. A call notes its progress in prog; a call silent for
// hedgeAfter (> 0) has its keys asked of their next owners and its node
// reported to suspect. st is scratch (nil: fanout's own).
func fanout[R any](ctx context.Context, hedgeAfter time.Duration, suspect func(node string, err error),
	pl *placement, job fanJob[R], st *fanState[R]) {
	if st == nil {
		st = new(fanState[R])
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if st.results == nil {
		st.results = make(chan *flight[R])
	}
	nk := pl.keys()
	st.next = resize(st.next, nk)
	st.inflight = resize(st.inflight, nk)
	st.arena = st.arena[:0]
	st.cnt = resize(st.cnt, len(pl.nodes))
	st.flights = st.flights[:0]

	launch := func(keys []int) {
		// Group keys by the node they are asked of next, in order of
		// first appearance, each group's keys in the order given:
		// counted, then placed end to end in the arena.
		st.launchN, st.order = st.launchN[:0], st.order[:0]
		for _, i := range keys {
			if int(st.next[i]) >= pl.count(i) {
				st.launchN = append(st.launchN, -1)
				continue
			}
			n := pl.owners(i)[st.next[i]]
			st.next[i]++
			if st.cnt[n] == 0 {
				st.order = append(st.order, n)
			}
			st.cnt[n]++
			st.launchN = append(st.launchN, n)
		}
		base := len(st.arena)
		end := base
		for _, n := range st.order {
			end += st.cnt[n]
			st.cnt[n] = end - st.cnt[n] // the group's start
		}
		st.arena = slices.Grow(st.arena, end-base)[:end]
		for j, i := range keys {
			if n := st.launchN[j]; n >= 0 {
				st.arena[st.cnt[n]] = i
				st.cnt[n]++ // ends at the group's end
			}
		}
		start := base
		for _, n := range st.order {
			f := st.flight()
			f.node, f.idx = n, st.arena[start:st.cnt[n]:st.cnt[n]]
			start = st.cnt[n]
			st.cnt[n] = 0
			f.prog.note()
			first := true
			for _, i := range f.idx {
				st.inflight[i]++
				first = first && st.next[i] == 1
			}
			st.flights = append(st.flights, f)
			node := pl.nodes[n]
			go func() {
				f.r, f.err = job.call(cctx, node, f.idx, first, &f.prog)
				st.results <- f
			}()
		}
	}
	// pending reports whether waiting can still resolve a wanted key.
	pending := func(wanted []int) bool {
		for _, i := range wanted {
			if st.inflight[i] > 0 || int(st.next[i]) < pl.count(i) {
				return true
			}
		}
		return false
	}
	// done takes a returned call out of the flights.
	done := func(f *flight[R]) {
		k := slices.Index(st.flights, f)
		last := len(st.flights) - 1
		st.flights[k], st.flights[last] = st.flights[last], nil
		st.flights = st.flights[:last]
	}

	st.wanted = job.want(st.wanted)
	launch(st.wanted)
	hedge := hedgeAfter
	if st.timer == nil {
		st.timer = time.NewTimer(time.Hour)
	}
	timer := st.timer
	defer timer.Stop()
	for len(st.flights) > 0 {
		st.wanted = job.want(st.wanted)
		wanted := st.wanted
		if !pending(wanted) {
			break
		}
		// Arm the timer for the call silent the longest.
		var oldest int64
		for _, f := range st.flights {
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
		case f := <-st.results:
			done(f)
			for _, i := range f.idx {
				st.inflight[i]--
			}
			job.merge(pl.nodes[f.node], f.idx, f.r, f.err)
			st.release(f)
			st.again = job.want(st.again)
			again := st.again[:0]
			for _, i := range st.again {
				if st.inflight[i] == 0 {
					again = append(again, i)
				}
			}
			launch(again)
		case <-hedgeC:
			st.isWanted = resize(st.isWanted, nk)
			for _, i := range wanted {
				st.isWanted[i] = true
			}
			again := st.again[:0]
			for _, f := range st.flights {
				if f.hedged || time.Since(f.prog.last()) < hedge {
					continue
				}
				f.hedged = true
				suspect(pl.nodes[f.node], errSlow)
				for _, i := range f.idx {
					if st.isWanted[i] {
						again = append(again, i)
						st.isWanted[i] = false // once per key per hedge
					}
				}
			}
			st.again = again
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
	for len(st.flights) > 0 {
		f := <-st.results
		done(f)
		st.release(f)
	}
}

// flight returns a cleared flight.
func (st *fanState[R]) flight() *flight[R] {
	if k := len(st.free); k > 0 {
		f := st.free[k-1]
		st.free = st.free[:k-1]
		return f
	}
	return new(flight[R])
}

// release takes back a flight whose call has returned and been merged.
func (st *fanState[R]) release(f *flight[R]) {
	var zero R
	f.idx, f.r, f.err, f.hedged = nil, zero, nil, false
	st.free = append(st.free, f)
}

// resize returns s with length n, all zero, reusing its capacity.
func resize[T any](s []T, n int) []T {
	s = slices.Grow(s[:0], n)[:n]
	clear(s)
	return s
}
