// Package testnode starts real cache nodes on loopback for tests: a real
// bbolt file in t.TempDir(), a real gRPC listener on port 0, stopped and
// closed in t.Cleanup.
package testnode

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
)

// Node is a started node and how to stop it early.
type Node struct {
	*cachenode.Node
	Dir    string
	cancel context.CancelFunc
}

// Stop shuts the node down gracefully and waits until its store is closed.
func (n *Node) Stop(t testing.TB) {
	t.Helper()
	n.cancel()
	if err := n.Wait(); err != nil {
		t.Errorf("node stop: %v", err)
	}
}

// Start runs a node with cfg (Data defaults to a temp dir, Listen to
// 127.0.0.1:0, logs discarded unless cfg.Logger is set).
func Start(t testing.TB, cfg cachenode.Config) *Node {
	t.Helper()
	if cfg.Data == "" {
		cfg.Data = t.TempDir()
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 5 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	n, err := cachenode.Start(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("start node: %v", err)
	}
	tn := &Node{Node: n, Dir: cfg.Data, cancel: cancel}
	t.Cleanup(func() { cancel(); _ = n.Wait() })
	return tn
}

// Cluster starts n nodes and returns them with their addresses.
func Cluster(t testing.TB, n int, cfg cachenode.Config) ([]*Node, []string) {
	t.Helper()
	nodes := make([]*Node, n)
	addrs := make([]string, n)
	for i := range nodes {
		c := cfg
		c.NodeID = "node" + string(rune('a'+i))
		nodes[i] = Start(t, c)
		addrs[i] = nodes[i].Addr()
	}
	return nodes, addrs
}
