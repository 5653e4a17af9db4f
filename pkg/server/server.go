// Package server adapts a store.Store to the kvcache.v1 gRPC service.
//
// It is deliberately thin: it checks request framing, hands blocks to the
// store (which verifies them) and maps errors to status codes in one place
// (status.go). It holds no block state of its own beyond a Put stream's
// partially received block.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/buildinfo"
	"github.com/kvcache/kvcache/pkg/auth"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// Options tune a Server. The zero value of each field means its default.
type Options struct {
	// MaxBlockBytes is the largest encoded block a Put may carry; larger
	// blocks are rejected with ResourceExhausted before any byte is buffered.
	// Default 64 MiB.
	MaxBlockBytes int
	// ChunkBytes is the default data size of one Get message. Default 1 MiB.
	ChunkBytes int
	// MaxKeys bounds the keys of one Lookup, Get or Delete. Default 65536.
	MaxKeys int
	// PutParallel is how many blocks of one Put stream may wait for their
	// commit at once, so one stream shares group commits with itself.
	// Default 8.
	PutParallel int
	// NodeID names the node in Stats.
	NodeID string
	// DataAddr is the node's bulk data-plane address advertised in Stats
	// (":port" means the host the client dialled); "" = none.
	DataAddr string
	// AssemblyBudget bounds the bytes of blocks being received, summed
	// over every Put stream. A block reserves the buffer it holds, which
	// grows with what has arrived (at most twice the bytes received, never
	// its announced size up front); a block that would take the total over
	// the budget is rejected with ResourceExhausted and a message saying to
	// retry, and its stream goes on. It should be at least twice
	// MaxBlockBytes. Default 256 MiB.
	AssemblyBudget int64
	// PutIdleTimeout is how long a Put stream may go without sending a
	// message; then it fails with DeadlineExceeded and frees its buffers.
	// Default 30s.
	PutIdleTimeout time.Duration
	// OnBlock, if set, is called with the result of every block of every
	// Put stream (stored, already present, or rejected with its code).
	OnBlock func(*kvcachev1.PutResult)
	// Logger receives rejected-block reports. Default slog.Default().
	Logger *slog.Logger
	// Usage receives per-tenant counters for Stats; nil means a Usage of
	// the server's own.
	Usage *Usage
	// TenantBytes, if set, reports the bytes and blocks a tenant holds
	// (from the store's quota accounting) for its Stats; nil reports 0.
	TenantBytes func(tenant string) (bytes, blocks int64)
	// TenantQuota, if set, is the byte budget shown to a tenant as its
	// capacity_bytes; nil or 0 shows the node's capacity.
	TenantQuota func(tenant string) int64
}

const (
	defaultMaxBlockBytes = 64 << 20
	defaultChunkBytes    = 1 << 20
	maxChunkBytes        = 4 << 20
	defaultMaxKeys       = 1 << 16
	defaultPutParallel   = 8
	defaultBudget        = 256 << 20
	defaultPutIdle       = 30 * time.Second
)

// Server implements kvcachev1.KVCacheServiceServer over a store.
type Server struct {
	kvcachev1.UnimplementedKVCacheServiceServer
	st   store.Store
	opts Options
	log  *slog.Logger

	budget     budget   // bytes of blocks being received
	pools      bufPools // block assembly buffers by size class
	putStreams atomic.Int64
}

// AssemblyBytes is how many bytes blocks being received hold now.
func (s *Server) AssemblyBytes() int64 { return s.budget.used.Load() }

// PutStreams is how many Put streams are open now.
func (s *Server) PutStreams() int64 { return s.putStreams.Load() }

func (s *Server) observe(r *kvcachev1.PutResult) {
	if s.opts.OnBlock != nil {
		s.opts.OnBlock(r)
	}
}

// New returns a Server over st. It does not take ownership of st.
func New(st store.Store, opts *Options) *Server {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxBlockBytes <= 0 {
		o.MaxBlockBytes = defaultMaxBlockBytes
	}
	if o.ChunkBytes <= 0 {
		o.ChunkBytes = defaultChunkBytes
	}
	o.ChunkBytes = min(o.ChunkBytes, maxChunkBytes)
	if o.MaxKeys <= 0 {
		o.MaxKeys = defaultMaxKeys
	}
	if o.PutParallel <= 0 {
		o.PutParallel = defaultPutParallel
	}
	if o.AssemblyBudget <= 0 {
		o.AssemblyBudget = defaultBudget
	}
	if o.PutIdleTimeout <= 0 {
		o.PutIdleTimeout = defaultPutIdle
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if o.Usage == nil {
		o.Usage = NewUsage()
	}
	srv := &Server{st: st, opts: o, log: log}
	srv.budget.limit = o.AssemblyBudget
	return srv
}

// MaxMessageBytes is the largest gRPC message a client of this server needs
// to receive or send with the default chunking; nodes set their receive
// limit from it.
const MaxMessageBytes = maxChunkBytes + 64<<10

// parseKeys checks a request's namespace and keys and returns the
// namespace with the caller's tenant folded in.
func (s *Server) parseKeys(ctx context.Context, nsb []byte, kb [][]byte) (prefix.Namespace, []prefix.Key, error) {
	ns, err := prefix.NamespaceFromBytes(nsb)
	if err != nil {
		return ns, nil, err
	}
	ns = tenantNS(ctx, ns)
	if len(kb) == 0 {
		return ns, nil, fmt.Errorf("%w: empty key list", errInvalid)
	}
	if len(kb) > s.opts.MaxKeys {
		return ns, nil, fmt.Errorf("%w: %d keys, at most %d per call", errInvalid, len(kb), s.opts.MaxKeys)
	}
	keys := make([]prefix.Key, len(kb))
	for i, b := range kb {
		if keys[i], err = prefix.KeyFromBytes(b); err != nil {
			return ns, nil, fmt.Errorf("key %d: %w", i, err)
		}
	}
	return ns, keys, nil
}

// Lookup implements kvcachev1.KVCacheServiceServer.
func (s *Server) Lookup(ctx context.Context, req *kvcachev1.LookupRequest) (*kvcachev1.LookupResponse, error) {
	ns, keys, err := s.parseKeys(ctx, req.GetNamespace(), req.GetKeys())
	if err != nil {
		return nil, toStatus(err)
	}
	if !req.GetAll() {
		n, err := s.st.Lookup(ctx, ns, keys)
		if err != nil {
			return nil, toStatus(err)
		}
		return &kvcachev1.LookupResponse{PrefixLen: uint32(n)}, nil
	}
	present, err := s.st.Contains(ctx, ns, keys)
	if err != nil {
		return nil, toStatus(err)
	}
	n := 0
	for n < len(present) && present[n] {
		n++
	}
	return &kvcachev1.LookupResponse{PrefixLen: uint32(n), Present: present}, nil
}

// Get implements kvcachev1.KVCacheServiceServer.
//
// Each block is copied out of the store (Store.Get, one short read
// transaction) before it is streamed: a read transaction keeps every page
// freed while it is open from being reused, so one held for as long as a
// slow client takes to read would let the files grow past the capacity
// with whatever is written meanwhile. With Codec installed (GRPCOptions) a
// message references the copy and the transport copies it once more, into
// its write buffer; the copy is reused for the next block once the
// transport has released it (sendTracker), else a new one is taken.
func (s *Server) Get(req *kvcachev1.GetRequest, stream kvcachev1.KVCacheService_GetServer) error {
	ctx := stream.Context()
	ns, keys, err := s.parseKeys(ctx, req.GetNamespace(), req.GetKeys())
	if err != nil {
		return toStatus(err)
	}
	tu := s.opts.Usage.Tenant(identity(ctx).Tenant)
	chunkBytes := s.opts.ChunkBytes
	if c := int(req.GetMaxChunkBytes()); c > 0 {
		chunkBytes = min(c, maxChunkBytes)
	}
	track := newSendTracker()
	msg := &chunk{track: track}
	var buf []byte
	for i, k := range keys {
		if track.out.Load() > 0 {
			buf = nil // the transport still holds the previous block
		}
		block, err := s.st.Get(ctx, ns, k, buf)
		msg.GetResponse = kvcachev1.GetResponse{Index: uint32(i)}
		switch {
		case errors.Is(err, store.ErrNotFound):
			tu.Misses.Add(1)
			msg.Missing = true
			if err := stream.SendMsg(msg); err != nil {
				return err
			}
			if req.GetStopAtMiss() {
				return nil
			}
			continue
		case err != nil:
			return toStatus(err)
		}
		buf = block
		tu.Hits.Add(1)
		msg.BlockSize = uint32(len(block))
		for off := 0; off < len(block) || off == 0; off += chunkBytes {
			end := min(off+chunkBytes, len(block))
			msg.Offset, msg.Data = uint32(off), block[off:end]
			if err := stream.SendMsg(msg); err != nil {
				return err
			}
			if end == len(block) {
				break
			}
		}
		msg.Data = nil
	}
	return nil
}

// Delete implements kvcachev1.KVCacheServiceServer.
func (s *Server) Delete(ctx context.Context, req *kvcachev1.DeleteRequest) (*kvcachev1.DeleteResponse, error) {
	ns, keys, err := s.parseKeys(ctx, req.GetNamespace(), req.GetKeys())
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := s.st.Delete(ctx, ns, keys)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvcachev1.DeleteResponse{Deleted: uint32(n)}, nil
}

// Stats implements kvcachev1.KVCacheServiceServer. An admin sees the whole
// node; any other caller sees only its tenant's counters (and the node's
// identity and data address, which clients need), so no field depends on
// another tenant's traffic.
func (s *Server) Stats(ctx context.Context, _ *kvcachev1.StatsRequest) (*kvcachev1.StatsResponse, error) {
	if id := identity(ctx); id.Role != auth.RoleAdmin {
		return s.tenantStats(id.Tenant), nil
	}
	st := s.st.Stats()
	return &kvcachev1.StatsResponse{
		BytesUsed: uint64(st.BytesUsed), CapacityBytes: uint64(st.Capacity), Blocks: uint64(st.Blocks),
		Hits: uint64(st.Hits), Misses: uint64(st.Misses), Evictions: uint64(st.Evictions),
		Puts: uint64(st.Puts), PutBytes: uint64(st.PutBytes), FileBytes: uint64(st.FileBytes),
		NodeId: s.opts.NodeID, DataAddr: s.opts.DataAddr,
		Build: buildPB(),
	}, nil
}

// buildPB is the node's build as Stats reports it (to every caller: it
// says nothing about traffic).
func buildPB() *kvcachev1.BuildInfo {
	b := buildinfo.Get()
	return &kvcachev1.BuildInfo{Version: b.Version, Commit: b.Commit, GoVersion: b.GoVersion}
}

// tenantStats is the Stats answer for a non-admin caller.
func (s *Server) tenantStats(tenant string) *kvcachev1.StatsResponse {
	tu := s.opts.Usage.Tenant(tenant)
	r := &kvcachev1.StatsResponse{
		Hits: uint64(tu.Hits.Load()), Misses: uint64(tu.Misses.Load()),
		Puts: uint64(tu.Puts.Load()), PutBytes: uint64(tu.PutBytes.Load()),
		CapacityBytes: uint64(s.st.Stats().Capacity),
		NodeId:        s.opts.NodeID, DataAddr: s.opts.DataAddr,
		Build: buildPB(),
	}
	if s.opts.TenantBytes != nil {
		b, n := s.opts.TenantBytes(tenant)
		r.BytesUsed, r.Blocks = uint64(b), uint64(n)
	}
	if s.opts.TenantQuota != nil {
		if q := s.opts.TenantQuota(tenant); q > 0 {
			r.CapacityBytes = uint64(q)
		}
	}
	return r
}
