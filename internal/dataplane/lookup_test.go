package dataplane_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/pkg/prefix"
	"github.com/kvcache/kvcache/pkg/store/storetest"
)

func TestLookupRoundTrip(t *testing.T) {
	st := memStore(t)
	ctx := ctxT(t)
	ns := storetest.Namespace("lk")
	var keys []prefix.Key
	var want []bool
	for i := range 300 {
		k := storetest.Key(string(rune('a'+i%26)) + string(rune('0'+i/26)))
		keys = append(keys, k)
		if i%3 != 1 {
			if _, err := st.Put(ctx, ns, k, storetest.Block(nil, storetest.Payload(k.String(), 16))); err != nil {
				t.Fatal(err)
			}
			want = append(want, true)
		} else {
			want = append(want, false)
		}
	}
	addr, reqs := serve(t, st, dataplane.ServerOptions{})
	dc, err := dataplane.Dial(ctx, addr, dataplane.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	// Lookups and fetches share the connection, in any order.
	for round := range 3 {
		p, err := dc.Lookup(ctx, ns, keys, nil, nil)
		if err != nil || !slices.Equal(p, want) {
			t.Fatalf("round %d: Lookup = %v, %v; want %v", round, p, err, want)
		}
		if err := <-reqs; err != nil {
			t.Fatalf("round %d: node reports %v", round, err)
		}
		idx := []int{5, 4, 1, 0}
		p, err = dc.Lookup(ctx, ns, keys, idx, p)
		if err != nil || !slices.Equal(p, []bool{want[5], want[4], want[1], want[0]}) {
			t.Fatalf("round %d: Lookup(idx) = %v, %v", round, p, err)
		}
		<-reqs
		var c collect
		if err := dc.Get(ctx, 0, ns, keys[:3], c.sink()); err != nil || !c.found[0] || c.found[1] || !c.found[2] {
			t.Fatalf("round %d: Get after Lookup: %v, %v", round, err, c.found)
		}
		<-reqs
	}
	if dc.Broken() {
		t.Fatal("connection broken after clean exchanges")
	}
	// Another namespace holds none of them.
	p, err := dc.Lookup(ctx, storetest.Namespace("other"), keys[:2], nil, nil)
	if err != nil || !slices.Equal(p, []bool{false, false}) {
		t.Fatalf("other namespace: %v, %v", p, err)
	}
}

func TestMalformedLookupRequests(t *testing.T) {
	st := memStore(t)
	addr, _ := serve(t, st, dataplane.ServerOptions{MaxKeys: 16, ReadTimeout: 200 * time.Millisecond})
	ns, k := storetest.Namespace("m"), storetest.Key("k")
	good := dataplane.AppendRequest(nil, dataplane.FlagLookup, ns, []prefix.Key{k})
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	for name, tc := range map[string]struct {
		req  []byte
		code byte
	}{
		"lookup+stop-at-miss": {with(func(b []byte) []byte { b[5] |= dataplane.FlagStopAtMiss; return b }), dataplane.CodeBadFlags},
		"lookup+unknown bit":  {with(func(b []byte) []byte { b[5] |= 0x04; return b }), dataplane.CodeBadFlags},
		"lookup reserved":     {with(func(b []byte) []byte { b[6] = 1; return b }), dataplane.CodeBadFlags},
		"lookup zero keys":    {with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 0); return b[:dataplane.RequestHeaderSize] }), dataplane.CodeBadCount},
		"lookup over limit":   {with(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[8:], 17); return b }), dataplane.CodeBadCount},
		"lookup version 2":    {with(func(b []byte) []byte { b[4] = 2; return b }), dataplane.CodeBadVersion},
	} {
		t.Run(name, func(t *testing.T) {
			out := rawRequest(t, addr, tc.req)
			rr := dataplane.ResponseReader{R: bytes.NewReader(out)}
			s, _, err := rr.Next()
			var re *dataplane.RemoteError
			if s != dataplane.StatusRequestError || !errors.As(err, &re) || re.Code != tc.code {
				t.Fatalf("answer %q: status %#x, %v; want a request error with code %d", out, s, err, tc.code)
			}
		})
	}
	// A truncated lookup is dropped without an answer.
	if out := rawRequest(t, addr, good[:len(good)-1]); len(out) != 0 {
		t.Fatalf("truncated lookup got %q", out)
	}
}

// fakeNode answers every request on its first connection with resp.
func fakeNode(t *testing.T, resp []byte) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		nc, err := lis.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		var hdr [dataplane.RequestHeaderSize]byte
		var req dataplane.Request
		if dataplane.ReadRequest(nc, 1<<16, &hdr, &req) != nil {
			return
		}
		_, _ = nc.Write(resp)
		var b [1]byte
		_, _ = nc.Read(b[:]) // until the client closes
	}()
	return lis.Addr().String()
}

func TestMalformedLookupResponses(t *testing.T) {
	frame := func(s dataplane.Status, payload ...byte) []byte {
		b := []byte{byte(s), 0, 0, 0, 0}
		binary.LittleEndian.PutUint32(b[1:], uint32(len(payload)))
		return append(b, payload...)
	}
	ns := storetest.Namespace("r")
	keys := []prefix.Key{storetest.Key("a"), storetest.Key("b")}
	for name, tc := range map[string]struct {
		resp    []byte
		oldNode bool
	}{
		"presence byte 2":    {resp: frame(dataplane.StatusPresence, 1, 2)},
		"short presence":     {resp: frame(dataplane.StatusPresence, 1)},
		"long presence":      {resp: frame(dataplane.StatusPresence, 1, 0, 1)},
		"truncated":          {resp: frame(dataplane.StatusPresence, 1, 0)[:6]},
		"block frame":        {resp: frame(dataplane.StatusFound, 1, 0)},
		"missing frame":      {resp: frame(dataplane.StatusMissing)},
		"unknown status":     {resp: frame(0x42, 1, 0)},
		"old node (code 3)":  {resp: frame(dataplane.StatusRequestError, append([]byte{dataplane.CodeBadFlags}, "unknown flags 0x2"...)...), oldNode: true},
		"long error message": {resp: frame(dataplane.StatusKeyError, append([]byte{6}, bytes.Repeat([]byte("x"), 100)...)...)},
	} {
		t.Run(name, func(t *testing.T) {
			// A truncated frame leaves the client waiting for the rest: its
			// deadline ends the wait, so keep it short.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			dc, err := dataplane.Dial(ctx, fakeNode(t, tc.resp), dataplane.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer dc.Close()
			p, err := dc.Lookup(ctx, ns, keys, nil, nil)
			if err == nil {
				t.Fatalf("Lookup accepted %q: %v", tc.resp, p)
			}
			var re *dataplane.RemoteError
			isOld := errors.As(err, &re) && re.Status == dataplane.StatusRequestError && re.Code == dataplane.CodeBadFlags
			if isOld != tc.oldNode {
				t.Fatalf("error %v: old-node %v, want %v", err, isOld, tc.oldNode)
			}
			if errors.Is(err, dataplane.ErrNoLookup) != tc.oldNode {
				t.Fatalf("error %v: matches ErrNoLookup %v, want %v", err, !tc.oldNode, tc.oldNode)
			}
		})
	}
}
