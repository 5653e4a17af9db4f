package cachenode_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

var testShape = kvblock.Shape{Tokens: 16, Layers: 2, KVHeads: 2, HeadDim: 32}

func block(t *testing.T, codec kvblock.Codec, seed float32) []byte {
	t.Helper()
	n := testShape.Tokens * testShape.Layers * testShape.KVHeads * testShape.HeadDim
	kv := &kvblock.KV{Shape: testShape, K: make([]float32, n), V: make([]float32, n)}
	for i := range kv.K {
		kv.K[i] = kvblock.RoundF16(seed + float32(i%97)/10)
		kv.V[i] = kvblock.RoundF16(seed - float32(i%89)/10)
	}
	b, err := kvblock.Encode(nil, kv, kvblock.Meta{Codec: codec, RoPE: true, Sinks: -1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func putOne(ctx context.Context, c kvcachev1.KVCacheServiceClient, ns, key, data []byte, chunk int) (*kvcachev1.PutResult, error) {
	st, err := c.Put(ctx)
	if err != nil {
		return nil, err
	}
	for off := 0; off < len(data) || off == 0; off += chunk {
		end := min(off+chunk, len(data))
		m := &kvcachev1.PutRequest{Offset: uint32(off), Data: data[off:end]}
		if off == 0 {
			m.Namespace, m.Key, m.BlockSize = ns, key, uint32(len(data))
		}
		if err := st.Send(m); err != nil {
			break
		}
		if end >= len(data) {
			break
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	if len(resp.GetResults()) != 1 {
		return nil, status.Errorf(codes.Internal, "%d results", len(resp.GetResults()))
	}
	return resp.GetResults()[0], nil
}

func TestPutGetLookupOverRealSockets(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{MetricsListen: "127.0.0.1:0"})
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	ctx := ctxT(t)
	ns := prefix.Namespace{1}
	keys := []prefix.Key{{1}, {2}, {3}}
	blocks := [][]byte{block(t, kvblock.Int8, 1), block(t, kvblock.F16, 2), block(t, kvblock.Int4, 3)}
	for i := range 2 { // only the first two: the third stays missing
		r, err := putOne(ctx, c, ns[:], keys[i][:], blocks[i], 1000) // several chunks per block
		if err != nil || r.GetOutcome() != kvcachev1.PutResult_OUTCOME_STORED {
			t.Fatalf("put %d: %v %v", i, r, err)
		}
	}
	r, err := putOne(ctx, c, ns[:], keys[0][:], blocks[0], 1<<20)
	if err != nil || r.GetOutcome() != kvcachev1.PutResult_OUTCOME_ALREADY_PRESENT {
		t.Fatalf("second put of a present key: %v %v", r, err)
	}
	kb := [][]byte{keys[0][:], keys[1][:], keys[2][:]}
	lr, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:], Keys: kb, All: true})
	if err != nil || lr.GetPrefixLen() != 2 || len(lr.GetPresent()) != 3 || lr.GetPresent()[2] {
		t.Fatalf("lookup = %v, %v; want prefix 2 and third absent", lr, err)
	}
	// Get in small chunks and reassemble.
	gs, err := c.Get(ctx, &kvcachev1.GetRequest{Namespace: ns[:], Keys: kb, MaxChunkBytes: 777})
	if err != nil {
		t.Fatal(err)
	}
	got := make([][]byte, 3)
	missing := map[uint32]bool{}
	for {
		m, err := gs.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if m.GetMissing() {
			missing[m.GetIndex()] = true
			continue
		}
		if int(m.GetOffset()) != len(got[m.GetIndex()]) || len(m.GetData()) > 777 {
			t.Fatalf("chunk offset %d after %d bytes, %d bytes", m.GetOffset(), len(got[m.GetIndex()]), len(m.GetData()))
		}
		got[m.GetIndex()] = append(got[m.GetIndex()], m.GetData()...)
	}
	for i := range 2 {
		if string(got[i]) != string(blocks[i]) {
			t.Errorf("block %d differs after the round trip", i)
		}
	}
	if !missing[2] || len(missing) != 1 {
		t.Errorf("missing = %v, want only index 2", missing)
	}
	st, err := c.Stats(ctx, &kvcachev1.StatsRequest{})
	if err != nil || st.GetBlocks() != 2 || st.GetBytesUsed() != uint64(len(blocks[0])+len(blocks[1])) {
		t.Fatalf("stats = %v, %v", st, err)
	}
	dr, err := c.Delete(ctx, &kvcachev1.DeleteRequest{Namespace: ns[:], Keys: kb})
	if err != nil || dr.GetDeleted() != 2 {
		t.Fatalf("delete = %v, %v", dr, err)
	}

	// Metrics and health over HTTP.
	for path, want := range map[string]string{"/metrics": "kvcache_store_blocks", "/healthz": "ok"} {
		resp, err := http.Get("http://" + n.MetricsAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, body lacks %q", path, resp.StatusCode, want)
		}
	}
}

func TestBadInputGetsItsCodeAndStoresNothing(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{MaxBlockBytes: 64 << 10, Capacity: 1 << 20})
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	ctx := ctxT(t)
	ns := prefix.Namespace{7}
	good := block(t, kvblock.Int8, 1)

	unary := []struct {
		name string
		call func() error
	}{
		{"lookup short key", func() error {
			_, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:], Keys: [][]byte{{1, 2}}})
			return err
		}},
		{"lookup short namespace", func() error {
			_, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:5], Keys: [][]byte{make([]byte, 32)}})
			return err
		}},
		{"lookup no keys", func() error {
			_, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:]})
			return err
		}},
		{"delete no keys", func() error {
			_, err := c.Delete(ctx, &kvcachev1.DeleteRequest{Namespace: ns[:]})
			return err
		}},
		{"get long key", func() error {
			s, err := c.Get(ctx, &kvcachev1.GetRequest{Namespace: ns[:], Keys: [][]byte{make([]byte, 33)}})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
	}
	for _, tc := range unary {
		if code := status.Code(tc.call()); code != codes.InvalidArgument {
			t.Errorf("%s: code %v, want InvalidArgument", tc.name, code)
		}
	}

	flip := func(b []byte, i int) []byte { b = append([]byte(nil), b...); b[i] ^= 0x40; return b }
	badCodec := append([]byte(nil), good...)
	badCodec[5] = 99
	puts := []struct {
		name string
		key  prefix.Key
		ns   []byte
		data []byte
		want codes.Code
	}{
		{"payload checksum", prefix.Key{1}, ns[:], flip(good, len(good)-3), codes.DataLoss},
		{"truncated payload", prefix.Key{2}, ns[:], good[:len(good)-10], codes.InvalidArgument},
		{"unknown codec", prefix.Key{3}, ns[:], badCodec, codes.InvalidArgument},
		{"garbage", prefix.Key{4}, ns[:], []byte("not a block at all, just some bytes................................................"), codes.InvalidArgument},
		{"short key", prefix.Key{}, ns[:], good, codes.InvalidArgument},
		{"short namespace", prefix.Key{5}, ns[:10], good, codes.InvalidArgument},
		{"over max block", prefix.Key{6}, ns[:], make([]byte, 65<<10), codes.ResourceExhausted},
	}
	for _, tc := range puts {
		key := tc.key[:]
		if tc.name == "short key" {
			key = key[:8]
		}
		r, err := putOne(ctx, c, tc.ns, key, tc.data, 4096)
		if err != nil {
			t.Errorf("%s: stream failed: %v", tc.name, err)
			continue
		}
		if r.GetOutcome() != kvcachev1.PutResult_OUTCOME_REJECTED || codes.Code(r.GetCode()) != tc.want {
			t.Errorf("%s: %v code %v (%s), want REJECTED %v", tc.name, r.GetOutcome(), codes.Code(r.GetCode()), r.GetReason(), tc.want)
		}
	}
	st, _ := c.Stats(ctx, &kvcachev1.StatsRequest{})
	if st.GetBlocks() != 0 {
		t.Fatalf("%d blocks stored after rejected puts", st.GetBlocks())
	}

	// Cancelled mid-block: nothing partial is stored.
	cctx, cancel := context.WithCancel(ctx)
	ps, err := c.Put(cctx)
	if err != nil {
		t.Fatal(err)
	}
	key := prefix.Key{9}
	if err := ps.Send(&kvcachev1.PutRequest{Namespace: ns[:], Key: key[:], BlockSize: uint32(len(good)), Data: good[:100]}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := ps.CloseAndRecv(); status.Code(err) != codes.Canceled {
		t.Errorf("cancelled put: %v", err)
	}
	lr, err := c.Lookup(ctx, &kvcachev1.LookupRequest{Namespace: ns[:], Keys: [][]byte{key[:]}})
	if err != nil || lr.GetPrefixLen() != 0 {
		t.Errorf("after a cancelled put lookup = %v, %v", lr, err)
	}
}

func TestFullStoreIsResourceExhausted(t *testing.T) {
	small, large := block(t, kvblock.Int8, 1), block(t, kvblock.F16, 1)
	// A valid block larger than the whole budget can never fit, however
	// much is evicted.
	n := testnode.Start(t, cachenode.Config{Capacity: int64(len(small)) + 10})
	c := kvcachev1.NewKVCacheServiceClient(dial(t, n.Addr()))
	ctx := ctxT(t)
	r, err := putOne(ctx, c, bytes.Repeat([]byte{9}, 32), bytes.Repeat([]byte{1}, 32), large, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetOutcome() != kvcachev1.PutResult_OUTCOME_REJECTED || codes.Code(r.GetCode()) != codes.ResourceExhausted {
		t.Fatalf("over-capacity block: %v", r)
	}
	if r, err := putOne(ctx, c, bytes.Repeat([]byte{9}, 32), bytes.Repeat([]byte{2}, 32), small, 1<<20); err != nil || r.GetOutcome() != kvcachev1.PutResult_OUTCOME_STORED {
		t.Fatalf("a block that fits: %v %v", r, err)
	}
}

func TestHealthReflectionAndRestart(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	cc := dial(t, n.Addr())
	ctx := ctxT(t)
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "kvcache.v1.KVCacheService"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v", hr, err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	rs, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(rctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), "kvcache.v1.KVCacheService") {
		t.Fatalf("reflection lists %v", names)
	}
	rcancel() // an open stream would hold graceful shutdown for its whole grace period

	// Put, stop gracefully, restart on the same file: the block is served.
	c := kvcachev1.NewKVCacheServiceClient(cc)
	data := block(t, kvblock.Int8, 4)
	ns, key := prefix.Namespace{3}, prefix.Key{3}
	if r, err := putOne(ctx, c, ns[:], key[:], data, 1<<20); err != nil || r.GetOutcome() != kvcachev1.PutResult_OUTCOME_STORED {
		t.Fatalf("put: %v %v", r, err)
	}
	n.Stop(t)
	n2 := testnode.Start(t, cachenode.Config{Data: n.Dir})
	c2 := kvcachev1.NewKVCacheServiceClient(dial(t, n2.Addr()))
	gs, err := c2.Get(ctx, &kvcachev1.GetRequest{Namespace: ns[:], Keys: [][]byte{key[:]}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := gs.Recv()
	if err != nil || m.GetMissing() || string(m.GetData()) != string(data) {
		t.Fatalf("after restart: missing=%v err=%v", m.GetMissing(), err)
	}
}
