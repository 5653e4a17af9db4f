package kvctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/kvctl"
	"github.com/kvcache/kvcache/internal/testnode"
)

// cli runs kvctl as the binary does and returns exit code, stdout, stderr.
func cli(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &kvctl.Env{Stdout: &out, Stderr: &errb, LookupEnv: func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}}
	code := kvctl.Run(context.Background(), e, args)
	return code, out.String(), errb.String()
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// blocks is the node's block count, read with kvctl itself.
func blocks(t *testing.T, addr string) int {
	t.Helper()
	code, out, errs := cli(t, nil, "stats", "--nodes", addr, "-o", "json")
	var rows []struct {
		Blocks int `json:"blocks"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 {
		t.Fatalf("stats: exit %d\n%s%s", code, out, errs)
	}
	return rows[0].Blocks
}

// TestExitCodes: 0 success, 2 usage errors (nothing runs), 1 operational
// failures; every failure is exactly one line on stderr plus, for usage
// errors, a pointer to --help.
func TestExitCodes(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	live, dead := n.Addr(), deadAddr(t)
	ns, key := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		code    int
		stderr  string // substring of the one error line
		stdout  string // substring of stdout
		noWrite bool   // the node must still be empty afterwards
	}{
		{name: "no command", args: nil, code: 2, stderr: "no command given"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "stray argument", args: []string{"stats", "extra", "--nodes", live}, code: 2, stderr: `unknown command "extra" for "kvctl stats"`},
		{name: "unknown flag", args: []string{"stats", "--bogus"}, code: 2, stderr: "unknown flag: --bogus"},
		{name: "get without --ns", args: []string{"get", "--key", key, "--nodes", live}, code: 2, stderr: `required flag(s) "ns" not set`},
		{name: "lookup on a dead node", args: []string{"lookup", "--ns", ns, "--keys", key, "--nodes", dead, "--timeout", "300ms"}, code: 1, stderr: "0 of 1 blocks cached, but: kvcache: unavailable: " + dead},
		{name: "lookup without --ns", args: []string{"lookup", "--keys", key, "--nodes", live}, code: 2, stderr: `required flag(s) "ns" not set`},
		{name: "bad namespace hex", args: []string{"get", "--ns", "zz", "--key", key, "--nodes", live}, code: 2, stderr: "--ns"},
		{name: "put --file without --ns", args: []string{"put", "--file", "x.bin", "--nodes", live}, code: 2, stderr: "--file needs --ns and --key", noWrite: true},
		{name: "bad token", args: []string{"put", "--tokens", "1,x", "--nodes", live}, code: 2, stderr: `token "x"`, noWrite: true},
		{name: "size zero layers", args: []string{"size", "--layers", "0"}, code: 2, stderr: "must be positive"},
		{name: "bad output format", args: []string{"size", "-o", "xml"}, code: 2, stderr: `-o "xml"`},
		{name: "json and yaml", args: []string{"size", "--json", "-o", "yaml"}, code: 2, stderr: "disagree"},
		{name: "bad env duration", env: map[string]string{"KVCACHE_TIMEOUT": "soon"}, args: []string{"stats"}, code: 2, stderr: `KVCACHE_TIMEOUT="soon"`},
		{name: "probe needs a target", args: []string{"probe"}, code: 2, stderr: "grpc http"},
		{name: "probe one target", args: []string{"probe", "--grpc", live, "--http", "http://x"}, code: 2, stderr: "none of the others can be"},
		{name: "stats of a dead node", args: []string{"stats", "--nodes", dead, "--timeout", "300ms"}, code: 1, stderr: "1 of 1 nodes did not answer", stdout: dead},
		{name: "get from a dead node", args: []string{"get", "--ns", ns, "--key", key, "--nodes", dead, "--timeout", "300ms"}, code: 1, stderr: "unavailable"},
		{name: "cluster with a dead node", args: []string{"cluster", "--nodes", live + "," + dead, "--timeout", "300ms"}, code: 1, stderr: "1 of 2 members not healthy", stdout: "ejected"},
		{name: "probe of a dead node", args: []string{"probe", "--grpc", dead, "--timeout", "300ms"}, code: 1, stderr: "unhealthy"},
		{name: "missing block", args: []string{"get", "--ns", ns, "--key", key, "--nodes", live}, code: 1, stderr: "not found"},
		{name: "size", args: []string{"size"}, code: 0, stdout: "f16"},
		{name: "version", args: []string{"version"}, code: 0, stdout: "kvctl "},
		{name: "--version", args: []string{"--version"}, code: 0, stdout: "(commit "},
		{name: "cluster healthy", args: []string{"cluster", "--nodes", live}, code: 0, stdout: "healthy"},
		{name: "probe", args: []string{"probe", "--grpc", live}, code: 0, stdout: "ok"},
		{name: "completion bash", args: []string{"completion", "bash"}, code: 0, stdout: "bash completion"},
		{name: "completion zsh", args: []string{"completion", "zsh"}, code: 0, stdout: "compdef _kvctl kvctl"},
		{name: "completion fish", args: []string{"completion", "fish"}, code: 0, stdout: "complete -c kvctl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := cli(t, tc.env, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errs)
			}
			lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
			if tc.args == nil {
				// No command: the command list, then the error.
				if !strings.Contains(errs, "Available Commands") {
					t.Errorf("no command list:\n%s", errs)
				}
				lines = lines[len(lines)-2:]
				errs = lines[0]
			}
			switch {
			case tc.code == 0 && errs != "":
				t.Errorf("success wrote to stderr:\n%s", errs)
			case tc.code == 1 && len(lines) != 1:
				t.Errorf("want one error line, got %d:\n%s", len(lines), errs)
			case tc.code == 2 && (len(lines) != 2 || !strings.HasPrefix(lines[1], "Run 'kvctl")):
				t.Errorf("want the error and a --help pointer, got:\n%s", errs)
			}
			if tc.code != 0 && (!strings.HasPrefix(errs, "kvctl: ") || !strings.Contains(lines[0], tc.stderr)) {
				t.Errorf("stderr %q, want a kvctl: line containing %q", errs, tc.stderr)
			}
			if !strings.Contains(out, tc.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tc.stdout, out)
			}
			if tc.noWrite && blocks(t, live) != 0 {
				t.Errorf("a refused command stored a block")
			}
		})
	}
}

// TestHelpRunsNothing: -h and --help anywhere on the line print the
// command's help, exit 0 and never dial or store anything.
func TestHelpRunsNothing(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	for _, args := range [][]string{
		{"put", "--nodes", n.Addr(), "--help"},
		{"put", "-h", "--nodes", n.Addr()},
		{"--nodes", n.Addr(), "put", "--codec", "int4", "-h"},
		{"help", "put"},
	} {
		code, out, errs := cli(t, nil, args...)
		if code != 0 || errs != "" || !strings.Contains(out, "Store one block") || !strings.Contains(out, "--block-tokens") {
			t.Errorf("%v: exit %d, want put's help\nstdout:\n%s\nstderr:\n%s", args, code, out, errs)
		}
	}
	if b := blocks(t, n.Addr()); b != 0 {
		t.Fatalf("help stored %d blocks", b)
	}
	// help SUB is SUB's help, not the root's.
	if _, out, _ := cli(t, nil, "help", "stats"); !strings.Contains(out, "Show each node's counters") || strings.Contains(out, "Available Commands") {
		t.Errorf("help stats:\n%s", out)
	}
	// The global flags and their environment variables are in every help.
	if _, out, _ := cli(t, nil, "lookup", "-h"); !strings.Contains(out, "env KVCACHE_NODES") || !strings.Contains(out, "env KVCACHE_TIMEOUT") {
		t.Errorf("lookup -h lacks the global flags:\n%s", out)
	}
}

// TestGlobalFlags: --nodes before or after the subcommand, from the
// environment, and a flag on the line winning over the environment.
func TestGlobalFlags(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	live, dead := n.Addr(), deadAddr(t)
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"flag before", nil, []string{"--nodes", live, "stats"}},
		{"flag after", nil, []string{"stats", "--nodes", live}},
		{"flag with =", nil, []string{"stats", "--nodes=" + live, "-ojson"}},
		{"env", map[string]string{"KVCACHE_NODES": live}, []string{"stats"}},
		{"flag over env", map[string]string{"KVCACHE_NODES": dead}, []string{"stats", "--nodes", live}},
		{"env output", map[string]string{"KVCACHE_NODES": live, "KVCACHE_OUTPUT": "yaml"}, []string{"stats"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := cli(t, tc.env, tc.args...)
			if code != 0 || !strings.Contains(out, live) {
				t.Fatalf("exit %d, want a row for %s\nstdout:\n%s\nstderr:\n%s", code, live, out, errs)
			}
		})
	}
	if _, out, _ := cli(t, map[string]string{"KVCACHE_NODES": live, "KVCACHE_OUTPUT": "yaml"}, "stats"); !strings.Contains(out, "- node: "+live) {
		t.Errorf("KVCACHE_OUTPUT=yaml:\n%s", out)
	}
}

// TestOutputFormats: every command that prints data prints the same
// fields as JSON and YAML.
func TestOutputFormats(t *testing.T) {
	n := testnode.Start(t, cachenode.Config{})
	nodes := "--nodes=" + n.Addr()
	var put struct {
		Result string `json:"result" yaml:"result"`
		NS     string `json:"ns" yaml:"ns"`
		Key    string `json:"key" yaml:"key"`
	}
	code, out, errs := cli(t, nil, "put", nodes, "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &put) != nil || put.Result != "stored" || len(put.Key) != 64 {
		t.Fatalf("put -o json: exit %d %+v\n%s%s", code, put, out, errs)
	}
	// The same block again is reported as already present, in every format.
	if code, out, _ := cli(t, nil, "put", nodes); code != 0 || !strings.HasPrefix(out, "already present (") {
		t.Errorf("second put: exit %d\n%s", code, out)
	}
	if _, out, _ := cli(t, nil, "put", nodes, "-o", "yaml"); !strings.Contains(out, "result: already present") {
		t.Errorf("second put -o yaml:\n%s", out)
	}
	for _, args := range [][]string{
		{"stats", nodes},
		{"cluster", nodes},
		{"lookup", nodes, "--ns", put.NS, "--keys", put.Key},
		{"get", nodes, "--ns", put.NS, "--key", put.Key},
		{"size"},
		{"version"},
		{"probe", "--grpc", n.Addr()},
	} {
		var fromJSON, fromYAML any
		code, js, errs := cli(t, nil, append(args, "-o", "json")...)
		if code != 0 || json.Unmarshal([]byte(js), &fromJSON) != nil {
			t.Errorf("%v -o json: exit %d\n%s%s", args, code, js, errs)
			continue
		}
		code, ys, errs := cli(t, nil, append(args, "-o", "yaml")...)
		if code != 0 || yaml.Unmarshal([]byte(ys), &fromYAML) != nil || strings.HasPrefix(ys, "{") || strings.HasPrefix(ys, "[") {
			t.Errorf("%v -o yaml: exit %d, want block YAML\n%s%s", args, code, ys, errs)
			continue
		}
		// Same document: compare through JSON so number types agree.
		a, _ := json.Marshal(fromJSON)
		b, _ := json.Marshal(fromYAML)
		if args[0] != "cluster" && args[0] != "stats" && !bytes.Equal(a, b) {
			t.Errorf("%v: JSON and YAML differ:\n%s\n%s", args, a, b)
		}
		if _, tbl, _ := cli(t, nil, args...); tbl == js || tbl == ys {
			t.Errorf("%v: the table is not the default", args)
		}
	}
	// Stats carries the node's build (the node runs in this test binary).
	var st []struct {
		Build struct {
			Version   string `json:"version"`
			GoVersion string `json:"go_version"`
		} `json:"build"`
	}
	if _, js, _ := cli(t, nil, "stats", nodes, "-o", "json"); json.Unmarshal([]byte(js), &st) != nil || len(st) != 1 ||
		st[0].Build.GoVersion != runtime.Version() || st[0].Build.Version == "" {
		t.Errorf("stats lacks the node's build: %+v\n%s", st, js)
	}
	// Hex keys that YAML would read as numbers (0e12...) stay strings.
	var hdr map[string]any
	_, ys, _ := cli(t, nil, "get", nodes, "--ns", put.NS, "--key", put.Key, "-o", "yaml")
	if yaml.Unmarshal([]byte(ys), &hdr) != nil || hdr["key"] != put.Key || hdr["codec"] != "int8" {
		t.Errorf("get -o yaml: %v\n%s", hdr, ys)
	}
}
