package worker

import (
	"context"
	"time"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// restore imports the longest usable cached prefix of prompt into seq and
// returns how many blocks it imported. Every full block of the prompt is
// usable: when all of them are imported (a full hit), the last token's KV
// is dropped again so that prefill computes exactly that one token, whose
// logits sample the first output token. Recomputing it gives the same f16
// KV as the imported one, so a hit stays bit-identical to a miss. Every
// failure (timeout, unreachable node, bad block) only shortens the prefix:
// the blocks not imported are simply prefilled.
func (w *Worker) restore(ctx context.Context, ns prefix.Namespace, seq *model.Sequence, prompt []int, t *Timings) int {
	if w.cfg.Cache == nil {
		return 0
	}
	b := w.cfg.BlockTokens
	usable := len(prompt) / b
	if usable == 0 {
		return 0
	}
	keys := prefix.BlockKeys(ns, toU32(prompt[:usable*b]), b)

	t0 := time.Now()
	lctx, cancel := context.WithTimeout(ctx, w.cfg.LookupTimeout)
	n, err := w.cfg.Cache.Lookup(lctx, ns, keys)
	cancel()
	t.LookupMS = msSince(t0)
	if err != nil {
		w.cacheError("lookup", err)
		return 0
	}
	n = min(n, len(keys))
	if n == 0 {
		return 0
	}

	t1 := time.Now()
	defer func() { t.FetchMS = msSince(t1) }()
	fctx, cancel := context.WithTimeout(ctx, w.cfg.FetchTimeout+time.Duration(n)*w.cfg.FetchPerBlock)
	blocks, err := w.cfg.Cache.FetchRaw(fctx, ns, keys[:n], nil)
	cancel()
	if err != nil {
		w.cacheError("fetch", err)
		return 0
	}
	t2 := time.Now()
	defer func() { t.ImportMS = msSince(t2) }()
	seq.Reserve(len(prompt) + 1)
	var kv kvblock.KV
	for i, blk := range blocks {
		h, err := kvblock.Decode(blk, &kv)
		if err == nil {
			err = w.checkBlock(&h, &kv, i)
		}
		if err == nil {
			err = seq.ImportBlock(i, kv.K, kv.V)
		}
		if err != nil {
			w.cacheError("decode", err)
			break
		}
		t.FetchedBlocks++
		t.FetchedBytes += len(blk)
	}
	if seq.Len() == len(prompt) {
		seq.Truncate(len(prompt) - 1)
	}
	return t.FetchedBlocks
}

// checkBlock rejects a decoded block that cannot be block i of this
// prompt. It guards the engine against a block that is intact but wrong
// (another shape, another position); values outside f16, which would
// poison attention, are refused by ImportBlock, in the pass that rounds
// them. Its parent is not checked here: Cache.FetchRaw checks it,
// in the one place that sees every fetched block (pkg/client receive.go).
// Decode does check the checksum again: the worker does not trust bytes
// handed over an interface (a test damages them after the client).
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
