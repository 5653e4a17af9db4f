package worker

import (
	"context"
	"log/slog"
	"time"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// DefaultBlockTokens is the default block size. Small blocks lose fewer
// tokens at the point where two prompts diverge (on average B/2 tokens are
// recomputed, and up to B more because the block holding the last prompt
// token is never fetched); on a CPU engine every lost token costs several
// milliseconds of prefill while one more block costs microseconds to look
// up and fetch. 16 tokens keep that loss small and still make each block
// tens of KiB, far above the per-block header and RPC overhead.
const DefaultBlockTokens = 16

// Cache is what the worker needs of a kvcache cluster. *client.Client
// implements it; tests substitute wrappers that fail or corrupt.
type Cache interface {
	// Lookup returns how many keys, from the first, are cached.
	Lookup(ctx context.Context, ns prefix.Namespace, keys []prefix.Key) (int, error)
	// FetchRawFunc hands the longest intact prefix of keys, as encoded
	// blocks, to fn in order, each as soon as it and the blocks before it
	// have arrived, while the rest are still arriving; it returns how many
	// fn took. Each block is verified to sit in the chain: block i's
	// parent is keys[i-1] and only block 0 has none. The worker does not
	// check that again. fn owns blk (it may keep it); dst, when given,
	// lends buffers (blk then aliases dst[i]). An error from fn stops the
	// fetch and is returned.
	FetchRawFunc(ctx context.Context, ns prefix.Namespace, keys []prefix.Key, dst [][]byte, fn func(i int, blk []byte) error) (int, error)
	// FetchRawAfterFunc is FetchRawFunc for keys continuing a chain after
	// parent: block 0's parent must be parent. The worker fetches the
	// part of a prefix after the blocks its hot tier holds with it.
	FetchRawAfterFunc(ctx context.Context, ns prefix.Namespace, parent prefix.Key, keys []prefix.Key, dst [][]byte, fn func(i int, blk []byte) error) (int, error)
	// Put stores encoded blocks.
	Put(ctx context.Context, ns prefix.Namespace, blocks []client.Block) error
}

// Config configures a Worker. Zero values mean the documented defaults;
// New never modifies the caller's Config.
type Config struct {
	// Model is the engine's model. Required.
	Model *model.Model
	// Cache is the cache cluster. Nil runs without a cache: every request
	// is a full prefill and nothing is appended.
	Cache Cache
	// Codec encodes appended blocks. Default kvblock.Int8. Fetched blocks
	// may use any codec: each block's header names its own.
	Codec kvblock.Codec
	// BlockTokens is B, the tokens per block. Default DefaultBlockTokens.
	// It is part of the namespace: workers with different B share nothing.
	BlockTokens int
	// Tenant salts the namespace. Default "" (one cache shared by all).
	Tenant string
	// LookupTimeout bounds the Lookup call. Default 200ms.
	LookupTimeout time.Duration
	// FetchTimeout bounds a fetch as FetchTimeout + FetchPerBlock per
	// block, so a long prefix gets proportionally longer. Defaults 200ms
	// and 2ms (a 16-token int8 block of the default model is ~34 KiB).
	FetchTimeout  time.Duration
	FetchPerBlock time.Duration
	// PutTimeout bounds each background Put. Default 5s.
	PutTimeout time.Duration
	// AppendQueue bounds the finished sequences waiting to be appended;
	// when it is full, a sequence's blocks are dropped (a lost future hit,
	// nothing else). Default 16.
	AppendQueue int
	// PromptOnly appends only the prompt's blocks, not those completed
	// during generation. Default false: both (see the package doc).
	PromptOnly bool
	// WaitAppend makes a request wait, before its response completes, for
	// the background append of the blocks it computed to be acknowledged
	// (or to fail), at most PutTimeout, so the same prompt sent next is a
	// hit. It holds the request's running place meanwhile: for tests and
	// demos. Default false: answer first, append afterwards.
	WaitAppend bool
	// MaxConcurrent bounds concurrent forward passes. Default 1.
	MaxConcurrent int
	// MaxRunning bounds the generation requests run at once; they
	// interleave on the MaxConcurrent forward-pass slots. Default
	// 4*MaxConcurrent.
	MaxRunning int
	// MaxQueue bounds the requests waiting for one of the MaxRunning
	// places; beyond it a request is answered 429 at once. Default
	// 8*MaxConcurrent. Negative means no queue (0 is the default).
	MaxQueue int
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout configure the
	// http.Server of NewServer: the time to send the request headers, the
	// whole request (headers and body), and an idle keep-alive connection.
	// Defaults 5s, 30s, 120s. ReadTimeout does not limit the response: a
	// generation streams for as long as it takes (there is no write
	// timeout).
	ReadHeaderTimeout, ReadTimeout, IdleTimeout time.Duration
	// PrefillChunk is how many tokens one prefill step computes while
	// holding the forward-pass semaphore. Default 256. Chunking never
	// changes results (see pkg/model's determinism guarantee).
	PrefillChunk int
	// HotCacheBytes is the byte budget of the in-process tier of hot
	// blocks (hot.go): verified blocks shared by every request, least
	// recently used evicted first. 0 (or less) disables it; cmd/worker's
	// --hot-cache-bytes defaults to 256 MiB. It works without a Cache too,
	// as a local prompt cache.
	HotCacheBytes int64
	// HotCacheTTL, when > 0, drops a hot block this long after it was
	// inserted, bounding how long the tier serves a block the cluster no
	// longer has. 0: blocks stay until evicted.
	HotCacheTTL time.Duration
	// Logger receives cache failures and request logs. Default slog.Default().
	Logger *slog.Logger
}

// withDefaults returns a copy of c with defaults filled in.
func (c Config) withDefaults() Config {
	if c.Codec == 0 {
		c.Codec = kvblock.Int8
	}
	if c.BlockTokens <= 0 {
		c.BlockTokens = DefaultBlockTokens
	}
	if c.LookupTimeout <= 0 {
		c.LookupTimeout = 200 * time.Millisecond
	}
	if c.FetchTimeout <= 0 {
		c.FetchTimeout = 200 * time.Millisecond
	}
	if c.FetchPerBlock <= 0 {
		c.FetchPerBlock = 2 * time.Millisecond
	}
	if c.PutTimeout <= 0 {
		c.PutTimeout = 5 * time.Second
	}
	if c.AppendQueue <= 0 {
		c.AppendQueue = 16
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = 1
	}
	if c.MaxRunning <= 0 {
		c.MaxRunning = 4 * c.MaxConcurrent
	}
	switch {
	case c.MaxQueue == 0:
		c.MaxQueue = 8 * c.MaxConcurrent
	case c.MaxQueue < 0:
		c.MaxQueue = 0
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 5 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.PrefillChunk <= 0 {
		c.PrefillChunk = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}
