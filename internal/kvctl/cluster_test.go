package kvctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
)

func TestClusterListsMembersHealthAndStats(t *testing.T) {
	_, addrs := testnode.Cluster(t, 2, cachenode.Config{})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	ctx := context.Background()
	var out, errb bytes.Buffer
	e := &Env{Stdout: &out, Stderr: &errb}
	if err := Main(ctx, e, []string{"put", "--nodes", addrs[0]}); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	nodes := strings.Join(append(addrs, deadAddr), ",")
	// A dead member is reported, and fails the command.
	if err := Main(ctx, e, []string{"cluster", "--nodes", nodes, "--json"}); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("cluster with a dead member: %v, want ErrUnhealthy (%s)", err, errb.String())
	}
	var rows []struct {
		Addr  string `json:"addr"`
		State string `json:"state"`
		Stats *struct {
			Blocks uint64 `json:"blocks"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	got := map[string]string{}
	blocks := uint64(0)
	for _, r := range rows {
		got[r.Addr] = r.State
		if r.Stats != nil {
			blocks += r.Stats.Blocks
		}
	}
	if got[addrs[0]] != "healthy" || got[addrs[1]] != "healthy" || got[deadAddr] != "ejected" || blocks != 1 {
		t.Fatalf("members %v with %d blocks; want two healthy, one ejected, 1 block", got, blocks)
	}
	out.Reset()
	if err := Main(ctx, e, []string{"cluster", "--nodes", strings.Join(addrs, ",")}); err != nil {
		t.Fatalf("cluster of healthy members: %v", err)
	}
	if !strings.Contains(out.String(), "NODE") || strings.Count(out.String(), "healthy") != 2 {
		t.Errorf("table output wants a header and two healthy rows:\n%s", out.String())
	}
	if err := Main(ctx, e, []string{"probe", "--grpc", addrs[0]}); err != nil {
		t.Errorf("probe of a live node: %v", err)
	}
	if err := Main(ctx, e, []string{"probe", "--grpc", deadAddr, "--timeout", "200ms"}); !errors.Is(err, ErrUnhealthy) {
		t.Errorf("probe of a dead node: %v, want ErrUnhealthy", err)
	}
}
