package client

import (
	"context"
	"fmt"
	"io"

	"google.golang.org/grpc"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// getStream reads the blocks of bs over one gRPC Get stream. Block data is
// copied once, from the transport's buffers into the block's buffer
// (getCodec), and checksummed piece by piece as it is copied.
func getStream(ctx context.Context, s kvcachev1.KVCacheServiceClient, ns prefix.Namespace, bs *blockSet) error {
	// Not stop-at-miss: a node asked first for a key it does not own (its
	// owner was suspect) must still answer for the keys after it that it
	// does own, or those would be written off as asked.
	stream, err := s.Get(ctx, &kvcachev1.GetRequest{Namespace: ns[:], Keys: keyBytes(bs.keys, bs.idx)}, grpc.ForceCodecV2(getStreamCodec))
	if err != nil {
		return err
	}
	var (
		framing error  // why into refused a message; grpc reports it only as Internal
		buf     []byte // the block being received
		recv    int    // its bytes received so far
	)
	msg := &getChunk{into: func(m *getChunk, n int) ([]byte, error) {
		j := int(m.Index)
		if j >= len(bs.idx) {
			framing = fmt.Errorf("%w: node answered index %d of %d keys", ErrUnavailable, j, len(bs.idx))
			return nil, framing
		}
		if m.Missing {
			return nil, nil
		}
		size, off := int(m.BlockSize), int(m.Offset)
		if off == 0 {
			buf, recv = bs.begin(j, size), 0
		} else if bs.cur != bs.idx[j] {
			framing = fmt.Errorf("%w: chunk at %d of a block not begun", ErrUnavailable, off)
			return nil, framing
		}
		if off != recv || off+n > size || size != len(buf) {
			framing = fmt.Errorf("%w: chunk at %d of a %d-byte block after %d bytes", ErrUnavailable, off, size, recv)
			return nil, framing
		}
		recv = off + n
		return buf[off:recv], nil
	}, copied: func(_ *getChunk, _ int, p []byte) { bs.write(p) }}
	for {
		if err := stream.RecvMsg(msg); err == io.EOF {
			return nil
		} else if err != nil {
			return cmpErr(framing, err)
		}
		bs.prog.note()
		if !msg.Missing && recv == int(msg.BlockSize) && bs.cur == bs.idx[msg.Index] {
			bs.end(int(msg.Index))
		}
	}
}
