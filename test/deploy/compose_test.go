package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type composeFile struct {
	Services map[string]struct {
		Ports []string `yaml:"ports"`
	} `yaml:"services"`
}

// rePort is a published port whose bind address and host port come from
// variables with defaults: "${BIND:-127.0.0.1}:${PORT:-8081}:8080".
var rePort = regexp.MustCompile(`^\$\{KVCACHE_BIND:-127\.0\.0\.1\}:\$\{(KVCACHE_[A-Z0-9_]+_PORT):-([0-9]+)\}:([0-9]+)$`)

// rePublished is a port line of `docker-compose config`.
var rePublished = regexp.MustCompile(`^- (127\.0\.0\.1:[0-9]+:[0-9]+)(?:/tcp)?$`)

// TestComposePortsFromVariables: every published port is on loopback by
// default and takes its host port from its own variable, so a second
// project (-p) with other values runs beside the first.
func TestComposePortsFromVariables(t *testing.T) {
	path := filepath.Join(repoRoot(t), "deploy", "compose.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	if err := yaml.Unmarshal(raw, &cf); err != nil {
		t.Fatal(err)
	}
	vars, defaults := map[string]bool{}, map[string]bool{}
	env := []string{"KVCACHE_BIND=127.0.0.1"}
	var want []string
	for name, s := range cf.Services {
		for _, p := range s.Ports {
			m := rePort.FindStringSubmatch(p)
			if m == nil {
				t.Errorf("service %s publishes %q; want ${KVCACHE_BIND:-127.0.0.1}:${KVCACHE_..._PORT:-N}:PORT", name, p)
				continue
			}
			if vars[m[1]] || defaults[m[2]] {
				t.Errorf("service %s: variable %s or default %s used twice", name, m[1], m[2])
			}
			vars[m[1]], defaults[m[2]] = true, true
			def, _ := strconv.Atoi(m[2])
			second := strconv.Itoa(def + 1000) // another port for a second project
			env = append(env, m[1]+"="+second)
			want = append(want, "127.0.0.1:"+second+":"+m[3])
		}
	}
	if len(vars) != 5 {
		t.Errorf("%d published ports, want 5 (3 nodes, 2 workers)", len(vars))
	}

	// With docker-compose present, let it interpolate: the second
	// project's ports are exactly the ones set.
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Log("docker-compose not installed: checked the file only")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-f", path, "-p", "kvcache-test-2", "config")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if m := rePublished.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			got = append(got, m[1])
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("docker-compose config published %v, want %v\n%s", got, want, out)
	}
}

// TestDeployReadmeNeedsNoTTY: every docker-compose exec in the deploy
// README and the compose file passes -T, so it works from scripts and CI.
func TestDeployReadmeNeedsNoTTY(t *testing.T) {
	for _, f := range []string{"README.md", "compose.yaml"} {
		raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", f))
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, " exec ") && strings.Contains(l, "compose") && !strings.Contains(l, "exec -T ") {
				t.Errorf("deploy/%s:%d: %q needs exec -T (no TTY in scripts)", f, i+1, strings.TrimSpace(l))
			}
		}
	}
}
