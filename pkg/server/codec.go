package server

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec we delegate to
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/grpcmem"
)

var recvPool = grpcmem.NewDirtyPool()

// GRPCOptions are the grpc.ServerOptions a server carrying this service
// should be built with. They install Codec, which lets Get hand block bytes
// from the store's memory map to the transport without copying them, and a
// receive buffer pool that does not clear buffers (grpc's default clears
// every received byte once more; see grpcmem). A server built without them
// still works: Get then pays one copy per message in the standard codec.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(Codec()), experimental.BufferPool(recvPool)}
}

// Codec returns the server's codec. On the wire it is the standard
// protobuf codec (it is named "proto" and reads and writes identical bytes,
// so every client works unchanged); it differs only in how block data is
// handled: Get's responses are marshalled as a few bytes of fields plus a
// reference to the block data (not a copy), and Put's requests are parsed
// in place with their data copied once, into the block being assembled.
// Every other message goes through the standard codec.
func Codec() encoding.CodecV2 { return codec{std: encoding.GetCodecV2("proto")} }

type codec struct{ std encoding.CodecV2 }

func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if ch, ok := v.(*chunk); ok {
		return ch.marshal(), nil
	}
	return c.std.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*putChunk); ok {
		return m.unmarshal(data)
	}
	return c.std.Unmarshal(data, v)
}

// chunk is one Get response message. It is a *kvcachev1.GetResponse to
// any codec (the embedded message's methods are promoted), so a server
// without Codec marshals it the standard way, copying Data before Send
// returns. Codec instead references Data and reports, through track, when
// the transport has written it: until then Data must stay valid, so Get
// keeps its read transaction open (see sendTracker).
type chunk struct {
	kvcachev1.GetResponse
	track *sendTracker
}

func (ch *chunk) marshal() mem.BufferSlice {
	m := &ch.GetResponse
	hdr := make([]byte, 0, 32)
	if m.Index != 0 {
		hdr = protowire.AppendTag(hdr, 1, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(m.Index))
	}
	if m.Missing {
		hdr = protowire.AppendTag(hdr, 2, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, 1)
	}
	if m.BlockSize != 0 {
		hdr = protowire.AppendTag(hdr, 3, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(m.BlockSize))
	}
	if m.Offset != 0 {
		hdr = protowire.AppendTag(hdr, 4, protowire.VarintType)
		hdr = protowire.AppendVarint(hdr, uint64(m.Offset))
	}
	data := m.Data
	if len(data) == 0 {
		return mem.BufferSlice{mem.SliceBuffer(hdr)}
	}
	hdr = protowire.AppendTag(hdr, 5, protowire.BytesType)
	hdr = protowire.AppendVarint(hdr, uint64(len(data)))
	// Small payloads are cheaper to copy, and grpc does not report the
	// release of buffers below its pooling threshold.
	if ch.track == nil || mem.IsBelowBufferPoolingThreshold(len(data)) {
		return mem.BufferSlice{mem.SliceBuffer(append(hdr, data...))}
	}
	data = data[:len(data):len(data)] // the capacity decides pooling; keep it exact
	ch.track.out.Add(1)
	return mem.BufferSlice{mem.SliceBuffer(hdr), mem.NewBuffer(&data, ch.track)}
}

// sendTracker counts block buffers handed to the transport and not yet
// written. It is a mem.BufferPool only so grpc calls Put when it releases
// a buffer; it never hands out memory.
type sendTracker struct {
	out atomic.Int64
	sig chan struct{} // a token after each release
}

func newSendTracker() *sendTracker { return &sendTracker{sig: make(chan struct{}, 1)} }

func (t *sendTracker) Get(int) *[]byte { panic("server: sendTracker is not a buffer source") }

func (t *sendTracker) Put(*[]byte) {
	t.out.Add(-1)
	select {
	case t.sig <- struct{}{}:
	default:
	}
}

// releaseGrace bounds the wait for buffers after the stream's context has
// ended. grpc releases a stream's buffers when it resets or cleans up the
// stream, which it does promptly once the context ends (a reset by the
// client, a closed connection); the bound only protects the handler from a
// transport that never does.
const releaseGrace = 5 * time.Second

// wait returns once every buffer has been released, or once the stream's
// context has ended and the transport has not released them within
// releaseGrace; it reports whether all were released.
func (t *sendTracker) wait(ctx context.Context) bool {
	var grace <-chan time.Time
	for t.out.Load() > 0 {
		select {
		case <-t.sig:
		case <-ctx.Done():
			if grace == nil {
				tm := time.NewTimer(releaseGrace)
				defer tm.Stop()
				grace = tm.C
			}
			select {
			case <-t.sig:
			case <-grace:
				return t.out.Load() == 0
			}
		}
	}
	return true
}

func (t *sendTracker) String() string { return fmt.Sprintf("%d buffers in flight", t.out.Load()) }

// putChunk is one PutRequest as Put consumes it. With Codec it is parsed in
// place and its data copied once, straight into the buffer of the block it
// belongs to (into says where); any other codec unmarshals it as the
// embedded PutRequest, and the getters read that.
type putChunk struct {
	kvcachev1.PutRequest

	custom            bool // parsed by Codec; the fields below are valid
	ns, key           []byte
	blockSize, offset uint32
	data              []byte
	placed            bool    // data sits in the block buffer into returned
	pre               *[]byte // a new block's buffer that into took from the pool
	scratch           []byte  // data that into did not place

	// into returns where the n data bytes of the message go, or nil for
	// scratch. It sees the parsed fields.
	into func(m *putChunk, n int) []byte
}

func (m *putChunk) GetNamespace() []byte {
	if m.custom {
		return m.ns
	}
	return m.PutRequest.GetNamespace()
}

func (m *putChunk) GetKey() []byte {
	if m.custom {
		return m.key
	}
	return m.PutRequest.GetKey()
}

func (m *putChunk) GetBlockSize() uint32 {
	if m.custom {
		return m.blockSize
	}
	return m.PutRequest.GetBlockSize()
}

func (m *putChunk) GetOffset() uint32 {
	if m.custom {
		return m.offset
	}
	return m.PutRequest.GetOffset()
}

func (m *putChunk) GetData() []byte {
	if m.custom {
		return m.data
	}
	return m.PutRequest.GetData()
}

func (m *putChunk) unmarshal(data mem.BufferSlice) error {
	m.custom, m.placed = true, false
	m.ns, m.key, m.blockSize, m.offset, m.data = m.ns[:0], m.key[:0], 0, 0, nil
	var payload grpcmem.Field
	err := grpcmem.Scan(data, func(num protowire.Number, v uint64) {
		switch num {
		case 3:
			m.blockSize = uint32(v)
		case 4:
			m.offset = uint32(v)
		}
	}, func(num protowire.Number, f grpcmem.Field) {
		switch num {
		case 1:
			m.ns = f.AppendTo(m.ns[:0])
		case 2:
			m.key = f.AppendTo(m.key[:0])
		case 5:
			payload = f
		}
	})
	if err != nil {
		return err
	}
	n := payload.Len()
	if dst := m.into(m, n); dst != nil {
		m.data, m.placed = dst[:n], true
	} else {
		if cap(m.scratch) < n {
			m.scratch = make([]byte, n)
		}
		m.data = m.scratch[:n]
	}
	return payload.CopyTo(m.data, nil)
}
