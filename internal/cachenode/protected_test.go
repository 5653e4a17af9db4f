package cachenode_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	kvcachev1 "github.com/kvcache/kvcache/proto/kvcache/v1"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/dataplane"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/prefix"
)

// netnsClientEnv makes the test binary a probe client (run inside a
// network namespace by TestProtectedModeRefusesRemoteClients): it calls
// Lookup on the gRPC address and a lookup on the data-plane address in
// the variable and prints one line per path.
const netnsClientEnv = "KVCACHE_TEST_NETNS_CLIENT"

func TestMain(m *testing.M) {
	if v := os.Getenv(netnsClientEnv); v != "" {
		grpcAddr, dataAddr, _ := strings.Cut(v, ",")
		os.Exit(netnsProbe(grpcAddr, dataAddr))
	}
	os.Exit(m.Run())
}

func netnsProbe(grpcAddr, dataAddr string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("grpc dial:", err)
		return 1
	}
	defer cc.Close()
	key := make([]byte, 32)
	key[0] = 1
	_, err = kvcachev1.NewKVCacheServiceClient(cc).Lookup(ctx, &kvcachev1.LookupRequest{Namespace: key, Keys: [][]byte{key}})
	fmt.Printf("grpc %s: %s\n", status.Code(err), status.Convert(err).Message())
	dc, err := dataplane.Dial(ctx, dataAddr, dataplane.DialOptions{})
	if err != nil {
		fmt.Println("data dial:", err)
		return 1
	}
	defer dc.Close()
	var k prefix.Key
	k[0] = 1
	_, err = dc.Lookup(ctx, prefix.Namespace(k), []prefix.Key{k}, nil, nil)
	fmt.Printf("data %v\n", err)
	return 0
}

// TestProtectedModeRefusesRemoteClients starts a node without credentials
// on a veth address and probes it from another network namespace: refused
// with a message saying how to enable auth, on gRPC and the data plane;
// with --insecure served. Needs root and ip(8); the namespace and the veth
// pair are uniquely named and always removed.
func TestProtectedModeRefusesRemoteClients(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("protected-mode test needs root to create a network namespace")
	}
	ipBin, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("protected-mode test needs ip(8) (iproute2)")
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	id := hex.EncodeToString(suffix)
	ns, hostIf, nsIf := "kvct-"+id, "kvh"+id, "kvn"+id
	sub := fmt.Sprintf("10.%d.%d", 200+int(suffix[0])%50, suffix[1])
	hostIP, nsIP := sub+".1", sub+".2"
	run := func(args ...string) error {
		out, err := exec.Command(ipBin, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := run("netns", "add", ns); err != nil {
		t.Skipf("cannot create a network namespace here: %v", err)
	}
	t.Cleanup(func() {
		_ = run("link", "del", hostIf) // also removes the peer
		if err := run("netns", "del", ns); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	for _, args := range [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", ns},
		{"addr", "add", hostIP + "/24", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", ns, "addr", "add", nsIP + "/24", "dev", nsIf},
		{"-n", ns, "link", "set", nsIf, "up"},
		{"-n", ns, "link", "set", "lo", "up"},
	} {
		if err := run(args...); err != nil {
			t.Fatal(err)
		}
	}
	probe := func(n *testnode.Node) string {
		t.Helper()
		_, gp, _ := net.SplitHostPort(n.Addr())
		_, dp, _ := net.SplitHostPort(n.DataAddr())
		cmd := exec.Command(ipBin, "netns", "exec", ns, os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), netnsClientEnv+"="+net.JoinHostPort(hostIP, gp)+","+net.JoinHostPort(hostIP, dp))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("probe client: %v: %s", err, out)
		}
		return string(out)
	}
	listen := net.JoinHostPort(hostIP, "0")
	protected := testnode.Start(t, cachenode.Config{Listen: listen, DataListen: listen})
	out := probe(protected)
	t.Logf("protected mode, from %s:\n%s", nsIP, out)
	if !strings.Contains(out, "grpc PermissionDenied: ") || !strings.Contains(out, "--auth-tokens") {
		t.Errorf("gRPC from another host was not refused with how to enable auth:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("code %d", dataplane.CodePermission)) {
		t.Errorf("data plane from another host was not refused:\n%s", out)
	}
	open := testnode.Start(t, cachenode.Config{Listen: listen, DataListen: listen, Security: cachenode.Security{Insecure: true}})
	out = probe(open)
	t.Logf("--insecure, from %s:\n%s", nsIP, out)
	if !strings.Contains(out, "grpc OK") || !strings.Contains(out, "data <nil>") {
		t.Errorf("--insecure node refused a remote client:\n%s", out)
	}
}
