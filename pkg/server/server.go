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
	"io"
	"log/slog"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

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
	// Logger receives rejected-block reports. Default slog.Default().
	Logger *slog.Logger
}

const (
	defaultMaxBlockBytes = 64 << 20
	defaultChunkBytes    = 1 << 20
	maxChunkBytes        = 4 << 20
	defaultMaxKeys       = 1 << 16
	defaultPutParallel   = 8
)

// Server implements kvcachev1.KVCacheServer over a store.
type Server struct {
	kvcachev1.UnimplementedKVCacheServer
	st   store.Store
	opts Options
	log  *slog.Logger
	pool sync.Pool // *[]byte block assembly buffers
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
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{st: st, opts: o, log: log}
}

// MaxMessageBytes is the largest gRPC message a client of this server needs
// to receive or send with the default chunking; nodes set their receive
// limit from it.
const MaxMessageBytes = maxChunkBytes + 64<<10

func (s *Server) parseKeys(nsb []byte, kb [][]byte) (prefix.Namespace, []prefix.Key, error) {
	ns, err := prefix.NamespaceFromBytes(nsb)
	if err != nil {
		return ns, nil, err
	}
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

// Lookup implements kvcachev1.KVCacheServer.
func (s *Server) Lookup(ctx context.Context, req *kvcachev1.LookupRequest) (*kvcachev1.LookupResponse, error) {
	ns, keys, err := s.parseKeys(req.GetNamespace(), req.GetKeys())
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

// Get implements kvcachev1.KVCacheServer. Each block is sent from inside its
// own read transaction straight out of the mmap (gRPC serialises a message
// before Send returns), so a block is copied once, into the send buffer, and
// a slow client never pins a transaction for more than one block.
func (s *Server) Get(req *kvcachev1.GetRequest, stream kvcachev1.KVCache_GetServer) error {
	ns, keys, err := s.parseKeys(req.GetNamespace(), req.GetKeys())
	if err != nil {
		return toStatus(err)
	}
	chunk := s.opts.ChunkBytes
	if c := int(req.GetMaxChunkBytes()); c > 0 {
		chunk = min(c, maxChunkBytes)
	}
	ctx := stream.Context()
	errStop := errors.New("stop")
	msg := new(kvcachev1.GetResponse)
	for i := range keys {
		err := s.st.View(ctx, ns, keys[i:i+1], func(_ int, block []byte, found bool) error {
			*msg = kvcachev1.GetResponse{Index: uint32(i)}
			if !found {
				msg.Missing = true
				if err := stream.Send(msg); err != nil {
					return err
				}
				if req.GetStopAtMiss() {
					return errStop
				}
				return nil
			}
			msg.BlockSize = uint32(len(block))
			for off := 0; off < len(block) || off == 0; off += chunk {
				end := min(off+chunk, len(block))
				msg.Offset, msg.Data = uint32(off), block[off:end]
				if err := stream.Send(msg); err != nil {
					return err
				}
				if end == len(block) {
					break
				}
			}
			msg.Data = nil
			return nil
		})
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return toStatus(err)
		}
	}
	return nil
}

// Delete implements kvcachev1.KVCacheServer.
func (s *Server) Delete(ctx context.Context, req *kvcachev1.DeleteRequest) (*kvcachev1.DeleteResponse, error) {
	ns, keys, err := s.parseKeys(req.GetNamespace(), req.GetKeys())
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := s.st.Delete(ctx, ns, keys)
	if err != nil {
		return nil, toStatus(err)
	}
	return &kvcachev1.DeleteResponse{Deleted: uint32(n)}, nil
}

// Stats implements kvcachev1.KVCacheServer.
func (s *Server) Stats(context.Context, *kvcachev1.StatsRequest) (*kvcachev1.StatsResponse, error) {
	st := s.st.Stats()
	return &kvcachev1.StatsResponse{
		BytesUsed: uint64(st.BytesUsed), CapacityBytes: uint64(st.Capacity), Blocks: uint64(st.Blocks),
		Hits: uint64(st.Hits), Misses: uint64(st.Misses), Evictions: uint64(st.Evictions),
		Puts: uint64(st.Puts), PutBytes: uint64(st.PutBytes), FileBytes: uint64(st.FileBytes),
		NodeId: s.opts.NodeID,
	}, nil
}

// Put implements kvcachev1.KVCacheServer. Blocks are assembled from their
// chunks and handed to the store as soon as each is whole, several at a time,
// so they share group commits. A block is stored whole or not at all: a
// stream that breaks mid-block drops that block, and the results of blocks
// already whole are not reported because the stream has failed.
func (s *Server) Put(stream kvcachev1.KVCache_PutServer) error {
	ctx := stream.Context()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.opts.PutParallel)
	var (
		mu      sync.Mutex
		results []*kvcachev1.PutResult
		ns      prefix.Namespace
		haveNS  bool
		cur     *pending // block being assembled; nil between blocks
		skip    bool     // rest of the current block was rejected up front
	)
	reject := func(key []byte, err error) {
		mu.Lock()
		results = append(results, &kvcachev1.PutResult{Key: key, Outcome: kvcachev1.PutResult_REJECTED, Code: int32(codeOf(err)), Reason: err.Error()})
		mu.Unlock()
	}
	commit := func(p *pending) {
		mu.Lock()
		idx := len(results)
		results = append(results, &kvcachev1.PutResult{Key: p.key[:]})
		mu.Unlock()
		g.Go(func() error {
			defer s.pool.Put(p.buf)
			stored, err := s.st.Put(gctx, p.ns, p.key, *p.buf)
			mu.Lock()
			defer mu.Unlock()
			r := results[idx]
			switch {
			case err != nil:
				r.Outcome, r.Code, r.Reason = kvcachev1.PutResult_REJECTED, int32(codeOf(err)), err.Error()
				if c := codeOf(err); c != codes.InvalidArgument && c != codes.DataLoss && c != codes.ResourceExhausted {
					s.log.Warn("put failed", "key", p.key.String(), "err", err)
				}
			case stored:
				r.Outcome = kvcachev1.PutResult_STORED
			default:
				r.Outcome = kvcachev1.PutResult_ALREADY_PRESENT
			}
			return nil
		})
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			_ = g.Wait()
			return toStatus(err)
		}
		if req.GetOffset() != 0 { // continuation chunk
			if skip {
				continue
			}
			if cur == nil || int(req.GetOffset()) != cur.got {
				_ = g.Wait()
				return toStatus(fmt.Errorf("%w: chunk at offset %d, expected a new block or offset %d", errInvalid, req.GetOffset(), cur.gotOr0()))
			}
			if err := cur.add(req.GetData()); err != nil {
				_ = g.Wait()
				return toStatus(err)
			}
		} else {
			if cur != nil {
				_ = g.Wait()
				return toStatus(fmt.Errorf("%w: new block before the previous one (%d of %d bytes) was complete", errInvalid, cur.got, cur.size))
			}
			skip = false
			if len(req.GetNamespace()) > 0 {
				n, err := prefix.NamespaceFromBytes(req.GetNamespace())
				if err != nil {
					reject(req.GetKey(), err)
					skip = true
					continue
				}
				ns, haveNS = n, true
			}
			key, err := prefix.KeyFromBytes(req.GetKey())
			switch {
			case err != nil:
				reject(req.GetKey(), err)
				skip = true
				continue
			case !haveNS:
				reject(req.GetKey(), fmt.Errorf("%w: first block of the stream has no namespace", errInvalid))
				skip = true
				continue
			case req.GetBlockSize() == 0:
				reject(req.GetKey(), fmt.Errorf("%w: block_size is 0", errInvalid))
				skip = true
				continue
			case int(req.GetBlockSize()) > s.opts.MaxBlockBytes:
				reject(req.GetKey(), fmt.Errorf("block of %d bytes, node maximum %d: %w", req.GetBlockSize(), s.opts.MaxBlockBytes, store.ErrTooLarge))
				skip = true
				continue
			}
			cur = s.newPending(ns, key, int(req.GetBlockSize()))
			if err := cur.add(req.GetData()); err != nil {
				_ = g.Wait()
				return toStatus(err)
			}
		}
		if cur.got == cur.size {
			commit(cur)
			cur = nil
		}
	}
	if err := g.Wait(); err != nil {
		return toStatus(err)
	}
	if cur != nil {
		return toStatus(fmt.Errorf("%w: stream ended inside a block (%d of %d bytes)", errInvalid, cur.got, cur.size))
	}
	if err := ctx.Err(); err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&kvcachev1.PutResponse{Results: results})
}

type pending struct {
	ns        prefix.Namespace
	key       prefix.Key
	size, got int
	buf       *[]byte
}

func (p *pending) gotOr0() int {
	if p == nil {
		return 0
	}
	return p.got
}

func (p *pending) add(data []byte) error {
	if p.got+len(data) > p.size {
		return fmt.Errorf("%w: chunk overruns block_size %d", errInvalid, p.size)
	}
	*p.buf = append(*p.buf, data...)
	p.got += len(data)
	return nil
}

func (s *Server) newPending(ns prefix.Namespace, key prefix.Key, size int) *pending {
	bp, _ := s.pool.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	if cap(*bp) < size {
		*bp = make([]byte, 0, size)
	}
	*bp = (*bp)[:0]
	return &pending{ns: ns, key: key, size: size, buf: bp}
}
