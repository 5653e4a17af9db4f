package dataplane_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

// FuzzReadRequest: the node's request decoder never panics, never
// allocates more keys than its limit, and accepts exactly what
// AppendRequest produces.
func FuzzReadRequest(f *testing.F) {
	ns := storetest.Namespace("f")
	f.Add(dataplane.AppendRequest(nil, 0, ns, []prefix.Key{storetest.Key("a")}))
	f.Add(dataplane.AppendRequest(nil, dataplane.FlagStopAtMiss, ns, []prefix.Key{storetest.Key("a"), storetest.Key("b")}))
	f.Add(dataplane.AppendRequest(nil, dataplane.FlagLookup, ns, []prefix.Key{storetest.Key("a"), storetest.Key("b")}))
	f.Add(dataplane.AppendRequest(nil, dataplane.FlagLookup|dataplane.FlagStopAtMiss, ns, []prefix.Key{storetest.Key("a")}))
	f.Add([]byte("KVDP\x01\x00\x00\x00\xff\xff\xff\xff"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		const maxKeys = 64
		var hdr [dataplane.RequestHeaderSize]byte
		var req dataplane.Request
		r := bytes.NewReader(in)
		for {
			err := dataplane.ReadRequest(r, maxKeys, &hdr, &req)
			if cap(req.Keys) > maxKeys {
				t.Fatalf("allocated %d keys, limit %d", cap(req.Keys), maxKeys)
			}
			if err != nil {
				var pe *dataplane.ProtocolError
				if !errors.As(err, &pe) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(req.Keys) == 0 || len(req.Keys) > maxKeys {
				t.Fatalf("decoded %d keys", len(req.Keys))
			}
			if req.Lookup() && req.Flags != dataplane.FlagLookup {
				t.Fatalf("accepted FlagLookup with other flags %#x", req.Flags)
			}
			again := dataplane.AppendRequest(nil, req.Flags, req.Namespace, req.Keys)
			if _, _, _, err := func() (int, int, int, error) {
				var r2 dataplane.Request
				return 0, 0, 0, dataplane.ReadRequest(bytes.NewReader(again), maxKeys, &hdr, &r2)
			}(); err != nil {
				t.Fatalf("re-encoded request does not decode: %v", err)
			}
		}
	})
}

// FuzzResponseReader: the client's response decoder never panics and never
// hands out a block larger than its limit.
func FuzzResponseReader(f *testing.F) {
	f.Add([]byte{0, 3, 0, 0, 0, 'a', 'b', 'c', 1, 0, 0, 0, 0})
	f.Add([]byte{0xFF, 4, 0, 0, 0, 1, 'b', 'a', 'd'})
	f.Add([]byte{2, 1, 0, 0, 0, 6})
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{3, 3, 0, 0, 0, 1, 0, 1})
	f.Add([]byte{3, 2, 0, 0, 0, 1, 7})
	f.Add([]byte{3, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 1 << 16
		rr := dataplane.ResponseReader{R: bytes.NewReader(in), MaxBlock: limit, Chunk: 7}
		for range 100 {
			s, n, err := rr.Next()
			if err != nil {
				return
			}
			if n > limit || n < 0 {
				t.Fatalf("block of %d bytes passed a %d limit", n, limit)
			}
			if s == dataplane.StatusPresence {
				if n < 1 || n > dataplane.MaxKeysLimit {
					t.Fatalf("presence frame of %d bytes passed", n)
				}
				p := make([]byte, n)
				if err := rr.ReadPresence(p); err != nil {
					return
				}
				for _, b := range p {
					if b > 1 {
						t.Fatalf("presence byte %#x passed", b)
					}
				}
				continue
			}
			if s == dataplane.StatusFound {
				dst := make([]byte, n)
				seen := 0
				if err := rr.ReadBlock(dst, func(off int, p []byte) {
					if off != seen {
						t.Fatalf("piece at %d after %d bytes", off, seen)
					}
					seen += len(p)
				}); err != nil {
					return
				}
				if seen != n {
					t.Fatalf("saw %d of %d bytes", seen, n)
				}
			}
		}
	})
}

// FuzzReadHello: the hello decoder never panics, returns a token of at
// most MaxTokenBytes, and reads back exactly what AppendHello wrote.
func FuzzReadHello(f *testing.F) {
	f.Add(dataplane.AppendHello(nil, "token-0123456789abcdef"))
	f.Add([]byte("KVDH\x01\x00\x00\x00"))
	f.Add([]byte("KVDH\x02\x00\x01\x00x"))
	f.Add([]byte("KVDH\x01\x00\xff\xffabc"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tok, err := dataplane.ReadHello(bytes.NewReader(in))
		if err != nil {
			var pe *dataplane.ProtocolError
			if !errors.As(err, &pe) && err != io.EOF && err != io.ErrUnexpectedEOF {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if len(tok) == 0 || len(tok) > dataplane.MaxTokenBytes {
			t.Fatalf("token of %d bytes accepted", len(tok))
		}
		if !bytes.Equal(dataplane.AppendHello(nil, tok), in[:dataplane.HelloHeaderSize+len(tok)]) {
			t.Fatalf("decoded token %q does not re-encode to the input", tok)
		}
	})
}
