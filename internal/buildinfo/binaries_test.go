package buildinfo_test

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestBinariesPrintVersion builds every command the way `make build` does
// (version and commit stamped with -ldflags) and runs --version: each must
// print its name and the stamped build, exit 0, and start nothing.
func TestBinariesPrintVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds five binaries")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		t.Skip("no go command")
	}
	const pkg = "github.com/kvcache/kvcache/internal/buildinfo"
	const rev = "0123456789abcdef0123456789abcdef01234567"
	dir := t.TempDir()
	cmds := []string{"cachenode", "worker", "kvctl", "kvbench", "kvdemo"}
	args := []string{"build", "-ldflags=-X " + pkg + ".version=v9.8.7 -X " + pkg + ".commit=" + rev, "-o", dir + "/"}
	for _, c := range cmds {
		args = append(args, "github.com/kvcache/kvcache/cmd/"+c)
	}
	if out, err := exec.Command(goBin, args...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, c := range cmds {
		out, err := exec.Command(filepath.Join(dir, c), "--version").CombinedOutput()
		want := c + " v9.8.7 (commit 0123456789ab, go"
		if err != nil || !strings.HasPrefix(string(out), want) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%s --version: %v\n%q, want one line starting %q", c, err, out, want)
		}
	}
}
