package worker

import (
	"bytes"
	"context"
	"time"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// restore imports the longest usable cached prefix of prompt into seq and
// returns how many blocks it imported: first the blocks the hot tier
// holds (hot.go), then the rest of the prefix from the cluster, which is
// asked only for the keys after the tier's. Every full block of the prompt
// is usable: when all of them are imported (a full hit), the last token's
// KV is dropped again so that prefill computes exactly that one token,
// whose logits sample the first output token. Recomputing it gives the
// same f16 KV as the imported one, so a hit stays bit-identical to a miss.
// Every failure (timeout, unreachable node, bad block) only shortens the
// prefix: the blocks not imported are simply prefilled.
//
// The blocks fetched for the hot tier are left in held, in the buffers
// they were fetched into, for the request to copy into the tier once it
// has sampled its first token (keepFetched); with held nil, restore does
// that itself before it returns.
func (w *Worker) restore(ctx context.Context, ns prefix.Namespace, seq *model.Sequence, prompt []int, t *Timings, held *heldBlocks) int {
	if held == nil {
		held = new(heldBlocks)
		defer w.keepFetched(held)
	}
	if w.cfg.Cache == nil && w.hot == nil {
		return 0
	}
	b := w.cfg.BlockTokens
	usable := len(prompt) / b
	if usable == 0 {
		return 0
	}
	keys := prefix.BlockKeys(ns, toU32(prompt[:usable*b]), b)
	seq.Reserve(len(prompt) + 1) // one allocation for every block imported
	n := w.hot.restore(ns, seq, keys, t)
	if n < len(keys) && w.cfg.Cache != nil {
		n += w.restoreRemote(ctx, ns, seq, keys, n, t, held)
	}
	if seq.Len() == len(prompt) {
		seq.Truncate(len(prompt) - 1)
	}
	t.HotTokens = min(t.HotBlocks*b, seq.Len())
	return n
}

// restoreRemote imports blocks from keys[from:] on out of the cluster into
// seq, which holds blocks [0, from), and returns how many it imported.
// Each one is also left in held for the hot tier (keepFetched).
//
// The fetch reads into buffers lent from w.fetchBufs, also with a tier:
// a fresh buffer per block (~197 KB for an f16 block of the 125M model)
// cost ~3 ms CPU per 1024-token hit (zeroing, page faults, scavenging) on
// the receiving goroutine, on the way to the first token; the tier's own
// copy is made after that token.
func (w *Worker) restoreRemote(ctx context.Context, ns prefix.Namespace, seq *model.Sequence, keys []prefix.Key, from int, t *Timings, held *heldBlocks) int {
	rest := keys[from:]
	t0 := time.Now()
	lctx, cancel := context.WithTimeout(ctx, w.cfg.LookupTimeout)
	n, err := w.cfg.Cache.Lookup(lctx, ns, rest)
	cancel()
	t.LookupMS = msSince(t0)
	if err != nil {
		w.cacheError("lookup", err)
		return 0
	}
	n = min(n, len(rest))
	if n == 0 {
		return 0
	}

	// Each block is imported as soon as it arrives, while the next ones
	// are still on their way: the import overlaps the fetch.
	t1 := time.Now()
	dst := w.lendFetchBufs(n)
	var kv kvblock.KV
	var importDur time.Duration
	var bad error
	imp := func(j int, blk []byte) error {
		ti := time.Now()
		defer func() { importDur += time.Since(ti) }()
		i := from + j
		h, err := kvblock.Inspect(blk)
		if err == nil {
			err = w.checkBlock(&h, &kv, i)
		}
		if err == nil {
			err = importBlock(seq, i, &h, blk, &kv)
		}
		if err != nil {
			bad = err
			return err
		}
		t.FetchedBlocks++
		t.FetchedBytes += len(blk)
		if w.hot == nil {
			w.putFetchBuf(blk) // imported: nothing refers to it any more
		} else {
			held.add(w, ns, keys[i], &h, blk)
		}
		if j < len(dst) && sameBuf(blk, dst[j]) {
			dst[j] = nil // accounted for with blk
		}
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FetchTimeout+time.Duration(n)*w.cfg.FetchPerBlock)
	if from == 0 {
		_, err = w.cfg.Cache.FetchRawFunc(fctx, ns, rest[:n], dst, imp)
	} else {
		_, err = w.cfg.Cache.FetchRawAfterFunc(fctx, ns, keys[from-1], rest[:n], dst, imp)
	}
	cancel()
	// The fetch has returned (nothing of it outlives the call): lent
	// buffers no block was delivered in are free again.
	for _, b := range dst {
		if b != nil {
			w.putFetchBuf(b)
		}
	}
	t.FetchMS = msSince(t1)
	t.ImportMS = float64(importDur.Nanoseconds()) / 1e6
	switch {
	case bad != nil:
		w.cacheError("decode", bad)
	case err != nil:
		// The blocks imported before the failure stay: it only shortens
		// the prefix.
		w.cacheError("fetch", err)
	}
	return t.FetchedBlocks
}

// lendFetchBufs returns n recycled block buffers (nil where the pool
// has none) for a fetch to read into.
func (w *Worker) lendFetchBufs(n int) [][]byte {
	dst := make([][]byte, n)
	for j := range dst {
		p, _ := w.fetchBufs.Get().(*[]byte)
		if p == nil {
			break
		}
		dst[j] = *p
	}
	return dst
}

func (w *Worker) putFetchBuf(b []byte) {
	b = b[:0]
	w.fetchBufs.Put(&b)
}

// sameBuf reports whether a and b share their backing array's start.
func sameBuf(a, b []byte) bool {
	return cap(a) > 0 && cap(b) > 0 && &a[:1][0] == &b[:1][0]
}

// heldBlocks are the blocks a request fetched, verified and imported,
// still in the buffers the fetch read them into (from Worker.fetchBufs or
// fresh), waiting to be copied into the hot tier (keepFetched). The zero
// value is empty.
type heldBlocks struct {
	ns     prefix.Namespace
	blocks []heldBlock
}

type heldBlock struct {
	key  prefix.Key
	hdr  kvblock.Header
	data []byte
}

func (h *heldBlocks) add(w *Worker, ns prefix.Namespace, key prefix.Key, hdr *kvblock.Header, data []byte) {
	h.ns = ns
	h.blocks = append(h.blocks, heldBlock{key: key, hdr: *hdr, data: data})
	w.heldBufs.Add(1)
}

// keepFetched copies the blocks held into the hot tier and returns the
// fetch buffers to the pool, on the caller's goroutine (restore without
// held; requests use keepFetchedAsync). Every held block was verified and
// imported whole, and is worth keeping even if the request failed after
// the restore.
func (w *Worker) keepFetched(h *heldBlocks) {
	w.copyHeld(h)
	w.releaseHeld(h)
}

// copyHeld puts the held blocks into the hot tier, each in a buffer of
// its own: the tier shares its blocks with every request without copying
// or checking them again, so none may alias a buffer that goes back to
// the pool and is fetched into again.
func (w *Worker) copyHeld(h *heldBlocks) {
	for i := range h.blocks {
		b := &h.blocks[i]
		w.hot.put(h.ns, b.key, &b.hdr, bytes.Clone(b.data)) // Clone: no zeroing of what it copies over
	}
}

// releaseHeld returns the held blocks' buffers to the pool.
func (w *Worker) releaseHeld(h *heldBlocks) {
	for i := range h.blocks {
		w.putFetchBuf(h.blocks[i].data)
		h.blocks[i].data = nil
	}
	w.heldBufs.Add(-int64(len(h.blocks)))
	h.blocks = h.blocks[:0]
}

// keepFetchedAsync is keepFetched on a goroutine of its own, for a request
// that has its first token: the copy (fresh memory, whose page faults cost
// 20+ ms for 64 blocks of 100 KB on a VM) then overlaps the answer instead
// of delaying it. It takes the blocks out of h at once. Until the copy
// ends, a request that needs one of them imports it from its fetch buffer
// (hotTier.importInflight), so the same prompt sent again at once still
// hits the tier. Close waits for the copies.
func (w *Worker) keepFetchedAsync(h *heldBlocks) {
	if len(h.blocks) == 0 {
		return
	}
	mine := &heldBlocks{ns: h.ns, blocks: h.blocks}
	h.blocks = nil
	if w.hot == nil { // nothing to copy into
		w.releaseHeld(mine)
		return
	}
	f := &inflight{blocks: make(map[prefix.Key]*heldBlock, len(mine.blocks))}
	for i := range mine.blocks {
		f.blocks[mine.blocks[i].key] = &mine.blocks[i]
	}
	w.hot.begin(mine.ns, f)
	w.copies.Add(1)
	go func() {
		defer w.copies.Done()
		if w.copyHook != nil {
			w.copyHook()
		}
		w.copyHeld(mine)
		w.hot.end(mine.ns, f) // waits for requests still reading the buffers
		w.releaseHeld(mine)
	}()
}

// checkBlock rejects a block (h its verified header) that cannot be block
// i of this prompt. It guards the engine against a block that is intact but
// wrong (another shape, another position); values outside f16, which would
// poison attention, are refused by the import (importBlock), in the pass
// that converts them. Its parent is not checked here: Cache.FetchRawFunc
// checks it, in the one place that sees every fetched block (pkg/client
// receive.go). Inspect does check the checksum again: the worker does not
// trust bytes handed over an interface (a test damages them after the
// client).
func (w *Worker) checkBlock(h *kvblock.Header, kv *kvblock.KV, i int) error {
	switch {
	case h.Shape != w.shape:
		return blockErrorf("block %d has shape %+v, want %+v", i, h.Shape, w.shape)
	case h.StartPos != uint32(i*w.cfg.BlockTokens):
		return blockErrorf("block %d starts at %d, want %d", i, h.StartPos, i*w.cfg.BlockTokens)
	case !h.RoPE:
		return blockErrorf("block %d holds pre-RoPE keys", i)
	}
	return nil
}

func toU32(tokens []int) []uint32 {
	u := make([]uint32, len(tokens))
	for i, t := range tokens {
		u[i] = uint32(t)
	}
	return u
}
