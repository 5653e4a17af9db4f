package client_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The client library (and the worker built on it) must not link the
// storage engine: a worker is stateless, and the data-plane code it shares
// with the node takes a small interface instead of pkg/store.
func TestClientLinksNoStore(t *testing.T) {
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command to list dependencies with")
		}
	}
	out, err := exec.Command(goBin, "list", "-deps",
		"github.com/kvcache/kvcache/pkg/client", "github.com/kvcache/kvcache/pkg/worker").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 || !slices.Contains(deps, "github.com/kvcache/kvcache/internal/dataplane") {
		t.Fatalf("go list printed no plausible dependency list:\n%s", out)
	}
	for _, d := range deps {
		if strings.HasPrefix(d, "go.etcd.io/bbolt") || d == "github.com/kvcache/kvcache/pkg/store" ||
			strings.HasPrefix(d, "github.com/kvcache/kvcache/pkg/store/") || d == "github.com/kvcache/kvcache/pkg/server" {
			t.Errorf("pkg/client or pkg/worker depends on %s", d)
		}
	}
}
