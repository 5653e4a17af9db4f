package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store"
)

// Put implements kvcachev1.KVCacheServiceServer. Blocks are assembled from
// their chunks and handed to the store as soon as each is whole, several at
// a time, so they share group commits. A block is stored whole or not at
// all: a stream that breaks mid-block drops that block, and the results of
// blocks already whole are not reported because the stream has failed.
//
// A stream that sends no message for Options.PutIdleTimeout fails with
// DeadlineExceeded and frees what it held. The handler cannot interrupt
// its own RecvMsg, so the messages are received by a second goroutine
// while the handler keeps the clock; that goroutine ends as soon as the
// handler returns (grpc then cancels the stream).
func (s *Server) Put(stream kvcachev1.KVCacheService_PutServer) error {
	s.putStreams.Add(1)
	defer s.putStreams.Add(-1)
	p := s.newPutStream(stream.Context())
	type outcome struct {
		resp *kvcachev1.PutResponse
		err  error
	}
	done := make(chan outcome, 1)
	got := make(chan struct{}, 1) // a token per message received
	eof := make(chan struct{})    // the client has sent everything
	go func() {
		resp, err := p.run(stream, got, eof)
		done <- outcome{resp, err}
	}()
	idle := time.NewTimer(s.opts.PutIdleTimeout)
	defer idle.Stop()
	for {
		select {
		case o := <-done:
			if o.err != nil {
				return toStatus(o.err)
			}
			return stream.SendAndClose(o.resp)
		case <-got:
			idle.Reset(s.opts.PutIdleTimeout)
		case <-eof:
			idle.Stop()
			eof = nil
		case <-idle.C:
			return status.Errorf(codes.DeadlineExceeded, "put stream sent no message for %v; the node closed it", s.opts.PutIdleTimeout)
		}
	}
}

// run receives and handles the stream's messages, signalling each on got
// and the end of the stream by closing eof, then waits for the commits.
func (p *putStream) run(stream kvcachev1.KVCacheService_PutServer, got chan<- struct{}, eof chan<- struct{}) (*kvcachev1.PutResponse, error) {
	defer p.release()
	for {
		err := stream.RecvMsg(&p.req)
		if err == io.EOF {
			close(eof)
			return p.finish(stream.Context())
		}
		if err == nil {
			select {
			case got <- struct{}{}:
			default:
			}
			err = p.message()
		}
		if err != nil {
			_ = p.g.Wait()
			return nil, err
		}
	}
}

// putStream is the state of one Put call: the namespace in force, the
// block being assembled and the results so far. Messages are handled in
// order by the receiving goroutine (begin for a block's first chunk, chunk
// for the others, finish at the end of the stream); whole blocks are
// stored by commit goroutines, which only touch results, under mu.
type putStream struct {
	s    *Server
	g    *errgroup.Group
	gctx context.Context

	tenant string       // the caller's, folded into every namespace
	usage  *TenantUsage // the tenant's counters

	ns     prefix.Namespace
	haveNS bool
	cur    *pending // block being assembled; nil between blocks
	skip   bool     // the rest of the current block was rejected up front
	req    putChunk // the message being received, reused

	mu      sync.Mutex
	results []*kvcachev1.PutResult
}

func (s *Server) newPutStream(ctx context.Context) *putStream {
	tenant := identity(ctx).Tenant
	p := &putStream{s: s, tenant: tenant, usage: s.opts.Usage.Tenant(tenant)}
	p.g, p.gctx = errgroup.WithContext(ctx)
	p.g.SetLimit(s.opts.PutParallel)
	p.req.into = p.place
	return p
}

// release returns the buffers still held: a block cut mid-stream, or a
// first chunk's buffer that no block took.
func (p *putStream) release() {
	p.dropPre()
	p.dropCur()
}

func (p *putStream) dropPre() {
	p.s.putBlockBuf(p.req.pre, true)
	p.req.pre = nil
}

func (p *putStream) dropCur() {
	if p.cur != nil {
		p.s.putBlockBuf(p.cur.buf, true)
		p.cur = nil
	}
}

// place is the codec's putChunk.into: chunk data lands directly in the
// block being assembled, a block's first chunk in a fresh block buffer
// (req.pre), the next ones after it. nil means scratch: message then
// reports the framing error or rejects the block.
//
// Buffers come from the assembly budget and hold what has arrived (see
// bufs.go); when the budget has no room place returns nil too, and
// begin or chunk rejects the block.
func (p *putStream) place(m *putChunk, n int) []byte {
	if m.offset != 0 {
		cur := p.cur
		if p.skip || cur == nil || int(m.offset) != cur.got || cur.got+n > cur.size ||
			!p.s.growBlockBuf(cur.buf, cur.got+n, cur.size) {
			return nil
		}
		*cur.buf = (*cur.buf)[:cur.got+n]
		return (*cur.buf)[cur.got:]
	}
	if p.cur != nil || m.blockSize == 0 || int(m.blockSize) > p.s.opts.MaxBlockBytes || n > int(m.blockSize) {
		return nil
	}
	if m.pre = p.s.getBlockBuf(n, int(m.blockSize)); m.pre == nil {
		return nil
	}
	*m.pre = (*m.pre)[:n]
	return *m.pre
}

// message handles the message just received. An error fails the stream.
func (p *putStream) message() error {
	defer p.dropPre() // a first chunk whose block was rejected
	defer func() {
		// Data that was not placed (a rejected block's) is not kept
		// for the next message: an idle stream holds no megabytes.
		if cap(p.req.scratch) > 64<<10 {
			p.req.scratch = nil
		}
	}()
	if p.req.GetOffset() != 0 {
		return p.chunk()
	}
	return p.begin()
}

// begin handles the first chunk of a block. A block that is malformed or
// too large is rejected on its own (its result says why) and the stream
// goes on; chunk framing errors fail the stream.
func (p *putStream) begin() error {
	req := &p.req
	if p.cur != nil {
		return fmt.Errorf("%w: new block before the previous one (%d of %d bytes) was complete", errInvalid, p.cur.got, p.cur.size)
	}
	p.skip = false
	if len(req.GetNamespace()) > 0 {
		n, err := prefix.NamespaceFromBytes(req.GetNamespace())
		if err != nil {
			p.reject(req.GetKey(), err)
			return nil
		}
		p.ns, p.haveNS = prefix.WithTenant(n, p.tenant), true
	}
	key, err := prefix.KeyFromBytes(req.GetKey())
	switch {
	case err != nil:
		p.reject(req.GetKey(), err)
		return nil
	case !p.haveNS:
		p.reject(req.GetKey(), fmt.Errorf("%w: first block of the stream has no namespace", errInvalid))
		return nil
	case req.GetBlockSize() == 0:
		p.reject(req.GetKey(), fmt.Errorf("%w: block_size is 0", errInvalid))
		return nil
	case int(req.GetBlockSize()) > p.s.opts.MaxBlockBytes:
		p.reject(req.GetKey(), fmt.Errorf("block of %d bytes, node maximum %d: %w", req.GetBlockSize(), p.s.opts.MaxBlockBytes, store.ErrTooLarge))
		return nil
	}
	buf := req.pre
	req.pre = nil
	if buf == nil { // not placed by the codec, or no budget then
		if buf = p.s.getBlockBuf(len(req.GetData()), int(req.GetBlockSize())); buf == nil {
			p.reject(req.GetKey(), p.s.budget.err(len(req.GetData())))
			return nil
		}
	}
	p.cur = &pending{ns: p.ns, key: key, size: int(req.GetBlockSize()), buf: buf}
	return p.add()
}

// chunk handles a continuation chunk of the current block.
func (p *putStream) chunk() error {
	if p.skip {
		return nil
	}
	cur := p.cur
	if cur == nil || int(p.req.GetOffset()) != cur.got {
		return fmt.Errorf("%w: chunk at offset %d, expected a new block or offset %d", errInvalid, p.req.GetOffset(), cur.gotOr0())
	}
	if n := len(p.req.GetData()); !p.req.placed && cur.got+n <= cur.size && !p.s.growBlockBuf(cur.buf, cur.got+n, cur.size) {
		p.reject(cur.key[:], p.s.budget.err(n))
		p.dropCur()
		return nil
	}
	return p.add()
}

// add appends the message's data to the current block and commits the
// block once it is whole.
func (p *putStream) add() error {
	if err := p.cur.add(p.req.GetData(), p.req.placed); err != nil {
		return err
	}
	if p.cur.got == p.cur.size {
		p.commit(p.cur)
		p.cur = nil
	}
	return nil
}

// finish waits for the commits and returns the response, or the error
// that fails the stream.
func (p *putStream) finish(ctx context.Context) (*kvcachev1.PutResponse, error) {
	if err := p.g.Wait(); err != nil {
		return nil, err
	}
	if p.cur != nil {
		return nil, fmt.Errorf("%w: stream ended inside a block (%d of %d bytes)", errInvalid, p.cur.got, p.cur.size)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return &kvcachev1.PutResponse{Results: p.results}, nil
}

// reject records a block rejected before it was assembled and skips the
// rest of its chunks.
func (p *putStream) reject(key []byte, err error) {
	p.skip = true
	p.mu.Lock()
	// req's buffers are reused by the next message: copy the key.
	r := &kvcachev1.PutResult{Key: bytes.Clone(key), Outcome: kvcachev1.PutResult_OUTCOME_REJECTED, Code: int32(codeOf(err)), Reason: err.Error()}
	p.results = append(p.results, r)
	p.mu.Unlock()
	p.s.observe(r)
}

// commit hands a whole block to the store in a commit goroutine; its
// result slot is taken now so results keep the order of the stream.
func (p *putStream) commit(b *pending) {
	p.mu.Lock()
	idx := len(p.results)
	p.results = append(p.results, &kvcachev1.PutResult{Key: b.key[:]})
	p.mu.Unlock()
	p.g.Go(func() error {
		defer p.s.putBlockBuf(b.buf, true)
		// The tenant label is what the store's quotas count against.
		stored, err := p.s.st.Put(store.WithTenant(p.gctx, p.tenant), b.ns, b.key, *b.buf)
		p.mu.Lock()
		defer p.mu.Unlock()
		r := p.results[idx]
		defer func() { p.s.observe(r) }()
		switch {
		case err != nil:
			r.Outcome, r.Code, r.Reason = kvcachev1.PutResult_OUTCOME_REJECTED, int32(codeOf(err)), err.Error()
			if c := codeOf(err); c != codes.InvalidArgument && c != codes.DataLoss && c != codes.ResourceExhausted {
				p.s.log.Warn("put failed", "key", b.key.String(), "err", err)
			}
		case stored:
			p.usage.Puts.Add(1)
			p.usage.PutBytes.Add(int64(len(*b.buf)))
			r.Outcome = kvcachev1.PutResult_OUTCOME_STORED
		default:
			r.Outcome = kvcachev1.PutResult_OUTCOME_ALREADY_PRESENT
		}
		return nil
	})
}

// pending is a block being assembled.
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

// add appends a chunk's data; placed means it is already in place at the
// end of the buffer (putChunk.into put it there).
func (p *pending) add(data []byte, placed bool) error {
	if p.got+len(data) > p.size {
		return fmt.Errorf("%w: chunk overruns block_size %d", errInvalid, p.size)
	}
	if !placed {
		*p.buf = append(*p.buf, data...)
	}
	p.got += len(data)
	return nil
}
