package worker

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/model"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// Worker serves generation requests on one model, reusing cached prefixes.
// It is safe for concurrent use.
type Worker struct {
	cfg   Config
	m     *model.Model
	info  model.Info
	ns    prefix.Namespace
	shape kvblock.Shape // of one block
	log   *slog.Logger

	sem      chan struct{} // forward-pass slots
	appender *appender
	admit    *admission
	maxTokB  int // the most bytes of text one token can stand for
	reg      *prometheus.Registry
	met      *metrics
	hot      *hotTier // nil when disabled
	// fetchBufs recycles fetched blocks' buffers (*[]byte): a block is
	// done with once imported, or, with the hot tier, once copied into it
	// (keepFetched). Each request takes at most one buffer per block it
	// fetches and gives them all back before it returns, so the pool holds
	// what concurrent requests use (until the GC drops it).
	fetchBufs sync.Pool
	heldBufs  atomic.Int64   // blocks held for the tier, not yet copied (tests)
	copies    sync.WaitGroup // keepFetchedAsync's copies in flight
	copyHook  func()         // tests: runs before each of those copies
}

// New builds a worker. It computes the model's weights digest (the cache
// namespace depends on it) and starts the background appender; Close stops
// it.
func New(cfg Config) (*Worker, error) {
	if cfg.Model == nil {
		return nil, errors.New("worker: no model")
	}
	cfg = cfg.withDefaults()
	if !cfg.Codec.Valid() {
		return nil, fmt.Errorf("worker: %w: codec %v", kvblock.ErrUnsupported, cfg.Codec)
	}
	info := cfg.Model.Info()
	if cfg.BlockTokens > min(kvblock.MaxTokens, info.ContextLen) {
		return nil, fmt.Errorf("worker: block of %d tokens exceeds the context (%d) or the block limit (%d)", cfg.BlockTokens, info.ContextLen, kvblock.MaxTokens)
	}
	ns, err := Namespace(info, cfg.BlockTokens, cfg.Tenant)
	if err != nil {
		return nil, err
	}
	w := &Worker{
		cfg:   cfg,
		m:     cfg.Model,
		info:  info,
		ns:    ns,
		shape: kvblock.Shape{Tokens: cfg.BlockTokens, Layers: info.KVLayers, KVHeads: info.KVHeads, HeadDim: info.HeadDim},
		log:   cfg.Logger,
		sem:   make(chan struct{}, cfg.MaxConcurrent),
		reg:   prometheus.NewRegistry(),
	}
	w.met = newMetrics(w.reg)
	w.hot = newHotTier(&cfg, w.reg)
	w.reg.MustRegister(buildinfo.Get().Collector())
	w.admit = newAdmission(cfg.MaxRunning, cfg.MaxQueue, w.met)
	w.maxTokB = maxTokenBytes(cfg.Model.Tokenizer())
	if cfg.Cache != nil {
		w.appender = newAppender(w)
		w.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kvcache_worker_append_pending",
			Help: "Finished sequences whose blocks are queued or being appended.",
		}, func() float64 { return float64(w.appender.Pending()) }))
	}
	return w, nil
}

// Namespace derives the cache namespace of a model's KV at block size
// blockTokens for a tenant: everything in info that makes KV incompatible.
func Namespace(info model.Info, blockTokens int, tenant string) (prefix.Namespace, error) {
	scaling := ""
	if info.RopeScaling != "" && info.RopeScaling != "none" {
		scaling = fmt.Sprintf("%s:%g", info.RopeScaling, info.RopeScale)
	}
	ns, err := prefix.NewNamespace(prefix.Params{
		Model:         info.Name,
		WeightsDigest: hex.EncodeToString(info.WeightsDigest[:]),
		Layers:        info.KVLayers,
		KVHeads:       info.KVHeads,
		HeadDim:       info.HeadDim,
		RopeTheta:     info.RopeTheta,
		RopeScaling:   scaling,
		KeysPostRoPE:  info.KeysPostRoPE,
		BlockTokens:   blockTokens,
		Tenant:        tenant,
		SlidingWindow: info.SlidingWindow,
	})
	if err != nil {
		return prefix.Namespace{}, fmt.Errorf("worker: namespace: %w", err)
	}
	return ns, nil
}

// ModelID is the model name the API serves and accepts.
func (w *Worker) ModelID() string { return w.info.Name }

// Info returns the served model's description.
func (w *Worker) Info() model.Info { return w.info }

// BlockTokens returns the block size B.
func (w *Worker) BlockTokens() int { return w.cfg.BlockTokens }

// Registry returns the worker's own Prometheus registry (never the global
// one), which Handler serves on /metrics.
func (w *Worker) Registry() *prometheus.Registry { return w.reg }

// Flush waits until every append queued so far has been attempted, or ctx
// ends.
func (w *Worker) Flush(ctx context.Context) error {
	if w.appender == nil {
		return nil
	}
	return w.appender.Flush(ctx)
}

// Close stops the background appender, waiting for queued appends until
// ctx ends. The Cache is the caller's to close.
func (w *Worker) Close(ctx context.Context) error {
	w.copies.Wait() // milliseconds: copies into the hot tier
	if w.appender == nil {
		return nil
	}
	return w.appender.Close(ctx)
}
