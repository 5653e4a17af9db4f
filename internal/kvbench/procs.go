package kvbench

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
)

// NodeCommand is the hidden subcommand under which kvbench re-executes
// itself to run a cache node in a child process.
const NodeCommand = "__node"

// localNode is a cache node kvbench started: in a child process or in
// this one.
type localNode struct {
	addr string
	cmd  *exec.Cmd
	pid  int // of the child; 0 in process
	stop func() error
}

// startNode starts one node on 127.0.0.1:0 over a new bbolt file in dir.
func startNode(ctx context.Context, mode, dir string, noSync bool, cpuProfile string) (*localNode, error) {
	if mode == "inproc" {
		nctx, cancel := context.WithCancel(ctx)
		n, err := cachenode.Start(nctx, cachenode.Config{
			Listen: "127.0.0.1:0", DataListen: "127.0.0.1:0", Data: dir, NoSync: noSync, NodeID: "kvbench",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			cancel()
			return nil, err
		}
		return &localNode{addr: n.Addr(), stop: func() error { cancel(); return n.Wait() }}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{NodeCommand, "-data", dir, "-nosync=" + strconv.FormatBool(noSync)}
	if cpuProfile != "" {
		args = append(args, "-cpuprofile", cpuProfile)
	}
	cmd := exec.Command(exe, args...)
	cmd.SysProcAttr = childAttr()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("kvbench: node child did not report its address: %w", err)
	}
	n := &localNode{addr: strings.TrimSpace(line), cmd: cmd, pid: cmd.Process.Pid}
	n.stop = func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			return <-done
		}
	}
	return n, nil
}

// NodeMain runs a cache node for a parent kvbench: it prints the bound
// address on stdout and serves until SIGTERM/SIGINT or until stdin closes.
func NodeMain(args []string) error {
	fs := flag.NewFlagSet(NodeCommand, flag.ContinueOnError)
	data := fs.String("data", "", "data directory")
	noSync := fs.Bool("nosync", false, "skip fsync")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the node here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *cpuProfile != "" {
		// Profile from the parent's SIGUSR1 (sent when its fetch phases
		// begin) to the end.
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			<-usr1
			_ = pprof.StartCPUProfile(f)
		}()
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	n, err := cachenode.Start(ctx, cachenode.Config{
		Listen: "127.0.0.1:0", DataListen: "127.0.0.1:0", Data: *data, NoSync: *noSync, NodeID: "kvbench", GCPercent: nodeGCPercent(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	fmt.Println(n.Addr())
	return n.Wait()
}

// nodeGCPercent is the child node's GC target: what cmd/cachenode uses,
// unless GOGC says otherwise.
func nodeGCPercent() int {
	if os.Getenv("GOGC") != "" {
		return 0
	}
	return 400
}

// redisServer is a redis-server kvbench started.
type redisServer struct {
	addr   string
	cmd    *exec.Cmd
	dir    string
	exited chan error // receives cmd.Wait's result once
}

// startRedis starts bin on a free loopback port with persistence off, in a
// fresh directory under tmp. The port is found by binding port 0 and
// releasing it; a lost race is retried.
func startRedis(ctx context.Context, bin, tmp string) (*redisServer, error) {
	dir, err := os.MkdirTemp(tmp, "redis-")
	if err != nil {
		return nil, err
	}
	var lastErr error
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
			"--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no",
			"--protected-mode", "yes", "--loglevel", "warning", "--logfile", filepath.Join(dir, "redis.log"))
		cmd.SysProcAttr = childAttr()
		if err := cmd.Start(); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("kvbench: start %s: %w", bin, err)
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if err := waitRedis(ctx, addr, exited); err != nil {
			_ = cmd.Process.Kill()
			<-exited
			lastErr = err
			continue
		}
		return &redisServer{addr: addr, cmd: cmd, dir: dir, exited: exited}, nil
	}
	os.RemoveAll(dir)
	return nil, fmt.Errorf("kvbench: redis-server did not come up: %w", lastErr)
}

func waitRedis(ctx context.Context, addr string, exited chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err // put it back for the caller
			return fmt.Errorf("redis-server exited: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_, err = c.Write([]byte("PING\r\n"))
			buf := make([]byte, 16)
			if err == nil {
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				var n int
				n, err = c.Read(buf)
				if err == nil && strings.HasPrefix(string(buf[:n]), "+PONG") {
					c.Close()
					return nil
				}
			}
			c.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("timeout waiting for PONG")
}

func (s *redisServer) stop() {
	if s == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	os.RemoveAll(s.dir)
}
