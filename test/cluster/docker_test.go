// Package cluster_test runs the multi-host scenarios of the cluster in
// containers built from deploy/Dockerfile.*: every node and worker is its
// own host on a private Docker network, and faults are real (SIGKILL,
// network disconnect, restart). Tests skip when Docker is not usable.
package cluster_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// docker runs the docker CLI and returns its trimmed stdout.
func docker(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// cleanupDocker removes a resource at the end of the test whatever
// happened; failures are logged, never fatal, so every cleanup runs.
func cleanupDocker(t testing.TB, args ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := docker(ctx, args...); err != nil && !strings.Contains(err.Error(), "No such") {
			t.Logf("cleanup: %v", err)
		}
	})
}

// requireDocker skips the test unless a Docker daemon answers.
func requireDocker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("container tests are skipped in -short mode")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker CLI not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := docker(ctx, "info", "--format", "{{.ServerVersion}}"); err != nil {
		t.Skipf("docker daemon not usable: %v", err)
	}
}

// images builds the cachenode and worker images once per test binary run
// from the repository's Dockerfiles, with binaries built the way
// `make images` builds them. They are removed in TestMain.
var images struct {
	once         sync.Once
	node, worker string
	err          error
}

func buildImages(t *testing.T) (node, worker string) {
	t.Helper()
	images.once.Do(func() { images.node, images.worker, images.err = build() })
	if images.err != nil {
		t.Fatalf("build images: %v", images.err)
	}
	return images.node, images.worker
}

func build() (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", "", fmt.Errorf("find module root: %w", err)
	}
	repo := strings.TrimSpace(string(root))
	ctxDir, err := os.MkdirTemp("", "kvcache-images-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(ctxDir)
	bin := filepath.Join(ctxDir, "bin")
	if err := os.MkdirAll(filepath.Join(bin, "empty"), 0o755); err != nil {
		return "", "", err
	}
	gobuild := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin+"/", "./cmd/cachenode", "./cmd/worker", "./cmd/kvctl")
	gobuild.Dir = repo
	gobuild.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := gobuild.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build: %w: %s", err, out)
	}
	tag := "test-" + randHex(4)
	var tags []string
	for _, name := range []string{"cachenode", "worker"} {
		df, err := os.ReadFile(filepath.Join(repo, "deploy", "Dockerfile."+name))
		if err != nil {
			return "", "", err
		}
		if err := os.WriteFile(filepath.Join(ctxDir, "Dockerfile."+name), df, 0o644); err != nil {
			return "", "", err
		}
		ref := "kvcache/" + name + ":" + tag
		if _, err := docker(ctx, "build", "-q", "-f", filepath.Join(ctxDir, "Dockerfile."+name), "-t", ref, ctxDir); err != nil {
			return "", "", err
		}
		builtImages = append(builtImages, ref)
		tags = append(tags, ref)
	}
	return tags[0], tags[1], nil
}

var builtImages []string

func TestMain(m *testing.M) {
	code := m.Run()
	for _, ref := range builtImages {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if _, err := docker(ctx, "rmi", "-f", ref); err != nil {
			fmt.Fprintln(os.Stderr, "cleanup:", err)
		}
		cancel()
	}
	os.Exit(code)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// cluster is one test's private network with its nodes and workers.
type cluster struct {
	t            *testing.T
	name, subnet string
	base         net.IP
	nodeImage    string
	workerImage  string
	nodes        []*container
	workers      []*container
}

type container struct {
	name, alias, ip string
}

// newCluster starts nodes cache nodes and workers workers on a fresh
// network. Every node and worker has a fixed IP so restarts keep it.
func newCluster(t *testing.T, nodes, workers int) *cluster {
	t.Helper()
	requireDocker(t)
	ni, wi := buildImages(t)
	c := &cluster{t: t, name: "kvct-" + randHex(4), nodeImage: ni, workerImage: wi}
	cleanupDocker(t, "network", "rm", c.name)
	c.subnet = createNetwork(t, c.name)
	ip, _, err := net.ParseCIDR(c.subnet)
	if err != nil {
		t.Fatalf("subnet %q: %v", c.subnet, err)
	}
	c.base = ip.To4()
	var aliases []string
	for i := range nodes {
		n := &container{name: fmt.Sprintf("%s-node%d", c.name, i+1), alias: fmt.Sprintf("node%d", i+1), ip: c.ipAt(10 + i)}
		c.nodes = append(c.nodes, n)
		aliases = append(aliases, n.alias+":7070")
		cleanupDocker(t, "volume", "rm", "-f", n.name)
		cleanupDocker(t, "rm", "-f", "-v", n.name)
		mustDocker(t, "run", "-d", "--name", n.name, "--label", "kvcache-test=1", "--network", c.name, "--network-alias", n.alias, "--ip", n.ip,
			"-v", n.name+":/data", ni, "--node-id", n.alias, "--shutdown-grace", "2s", "--log-level", "warn",
			// The test and the workers reach nodes over the container
			// network, which protected mode refuses without credentials;
			// this test is about failures, not authentication.
			"--insecure")
	}
	for _, n := range c.nodes {
		c.waitNode(n)
	}
	for i := range workers {
		w := &container{name: fmt.Sprintf("%s-worker%d", c.name, i+1), alias: fmt.Sprintf("worker%d", i+1), ip: c.ipAt(50 + i)}
		c.workers = append(c.workers, w)
		cleanupDocker(t, "rm", "-f", w.name)
		mustDocker(t, "run", "-d", "--name", w.name, "--label", "kvcache-test=1", "--network", c.name, "--ip", w.ip, wi,
			"--cache-nodes", strings.Join(aliases, ","), "--log-level", "warn")
	}
	for _, w := range c.workers {
		c.waitWorker(w)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, x := range append(append([]*container{}, c.nodes...), c.workers...) {
				logs, _ := docker(context.Background(), "logs", "--tail", "30", x.name)
				t.Logf("logs of %s:\n%s", x.name, logs)
			}
		}
	})
	return c
}

// createNetwork makes a bridge network on a random private /24 (fixed
// container IPs need a user-configured subnet), retrying on overlaps.
func createNetwork(t *testing.T, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	for range 20 {
		b := make([]byte, 2)
		_, _ = rand.Read(b)
		subnet := fmt.Sprintf("10.%d.%d.0/24", 200+int(b[0])%50, b[1])
		if _, err = docker(ctx, "network", "create", "--label", "kvcache-test=1", "--subnet", subnet, name); err == nil {
			return subnet
		}
		if !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	t.Fatalf("create network: %v", err)
	return ""
}

func (c *cluster) ipAt(host int) string {
	ip := make(net.IP, 4)
	copy(ip, c.base)
	ip[3] += byte(host)
	return ip.String()
}

func (n *container) addr() string { return n.ip + ":7070" }
func (n *container) url() string  { return "http://" + n.ip + ":8080" }

// waitNode polls the node's gRPC health service until it serves.
func (c *cluster) waitNode(n *container) {
	c.t.Helper()
	cc, err := grpc.NewClient(n.addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	waitFor(c.t, 30*time.Second, n.name+" serving", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		return err == nil && r.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
}

// waitWorker polls the worker's /healthz.
func (c *cluster) waitWorker(w *container) {
	c.t.Helper()
	hc := &http.Client{Timeout: time.Second}
	waitFor(c.t, 60*time.Second, w.name+" healthy", func() bool {
		resp, err := hc.Get(w.url() + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
