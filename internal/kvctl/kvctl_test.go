package kvctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/kvctl"
	"github.com/kvcache/kvcache/internal/testnode"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := kvctl.Main(context.Background(), &kvctl.Env{Stdout: &out, Stderr: &errb}, args)
	return out.String(), err
}

var (
	nsRe  = regexp.MustCompile(`(?m)^ns\s+([0-9a-f]{64})$`)
	keyRe = regexp.MustCompile(`(?m)^key\s+([0-9a-f]{64})$`)
)

// TestQuickStart follows the README: put a block, get it, restart the node,
// get it again.
func TestQuickStart(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	nodes := "--nodes=" + n.Addr()
	out, err := run(t, "put", nodes, "--codec", "int4")
	if err != nil {
		t.Fatalf("put: %v\n%s", err, out)
	}
	ns, key := nsRe.FindStringSubmatch(out), keyRe.FindStringSubmatch(out)
	if ns == nil || key == nil {
		t.Fatalf("put printed no ns/key:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "block.bin")
	out, err = run(t, "get", nodes, "--ns", ns[1], "--key", key[1], "--out", file)
	if err != nil || !strings.Contains(out, "codec      int4") || !strings.Contains(out, "16 tokens x 4 layers") {
		t.Fatalf("get: %v\n%s", err, out)
	}
	if out, err := run(t, "lookup", nodes, "--ns", ns[1], "--keys", key[1]+","+strings.Repeat("ab", 32)); err != nil || !strings.HasPrefix(out, "1 of 2") {
		t.Fatalf("lookup: %v %q", err, out)
	}

	n.Stop(t)
	n2 := testnode.Start(t, cachenode.Config{Data: n.Dir})
	nodes = "--nodes=" + n2.Addr()
	file2 := filepath.Join(t.TempDir(), "again.bin")
	if out, err := run(t, "get", nodes, "--ns", ns[1], "--key", key[1], "--out", file2); err != nil {
		t.Fatalf("get after restart: %v\n%s", err, out)
	}
	a, _ := os.ReadFile(file)
	b, _ := os.ReadFile(file2)
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("block differs after restart (%d vs %d bytes)", len(a), len(b))
	}
	// The saved file can be put back under another key.
	other := strings.Repeat("cd", 32)
	if out, err := run(t, "put", nodes, "--ns", ns[1], "--key", other, "--file", file); err != nil {
		t.Fatalf("put --file: %v\n%s", err, out)
	}
	out, err = run(t, "stats", nodes, "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Node   string `json:"node"`
		Blocks int    `json:"blocks"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0].Blocks != 2 {
		t.Fatalf("stats --json: %v\n%s", err, out)
	}
	if out, err := run(t, "stats", nodes); err != nil || !strings.Contains(out, "BLOCKS") {
		t.Fatalf("stats: %v\n%s", err, out)
	}
}

func TestSize(t *testing.T) {
	out, err := run(t, "size", "--layers", "32", "--kv-heads", "8", "--head-dim", "128", "--tokens", "1000")
	if err != nil {
		t.Fatal(err)
	}
	// Llama-3-8B: 128 KiB per token in f16, plus the block header spread
	// over the default 16-token block (the README's figure).
	if !regexp.MustCompile(`f16\s+131076\s+128\.0 KiB`).MatchString(out) {
		t.Errorf("f16 line wrong:\n%s", out)
	}
	// The same header over 64-token blocks costs a quarter as much per token.
	out64, err := run(t, "size", "--layers", "32", "--kv-heads", "8", "--head-dim", "128", "--block-tokens", "64")
	if err != nil || !regexp.MustCompile(`f16\s+131073\s`).MatchString(out64) || !strings.Contains(out64, "64-token blocks") {
		t.Errorf("--block-tokens 64: %v\n%s", err, out64)
	}
	for _, c := range []string{"bf16", "fp8_e4m3", "int8", "int4", "int2"} {
		if !strings.Contains(out, c) {
			t.Errorf("no %s line:\n%s", c, out)
		}
	}
	cla, err := run(t, "size", "--layers", "32", "--kv-heads", "8", "--head-dim", "128", "--cla")
	if err != nil || !strings.Contains(cla, "16 KV layers") || !regexp.MustCompile(`f16\s+65540`).MatchString(cla) {
		t.Errorf("CLA should halve the layers:\n%s", cla)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"size", "--layers", "0"},
		{"size", "--bogus"},
		{"put", "--tokens", "1,x", "--nodes", "127.0.0.1:1"},
	} {
		if _, err := run(t, args...); !errors.Is(err, kvctl.ErrUsage) {
			t.Errorf("%v: err = %v, want ErrUsage", args, err)
		}
	}
	if _, err := run(t, "lookup", "--ns", "zz", "--keys", "aa"); !errors.Is(err, kvctl.ErrUsage) {
		t.Errorf("bad hex namespace: err = %v, want ErrUsage", err)
	}
}
