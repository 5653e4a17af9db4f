// Package childproc runs the kvcache binaries (and llama-server) as child
// processes for the demo and the benchmarks: output to a log file, the
// bound address read from the child's JSON log, and a stop that escalates
// from SIGTERM to SIGKILL.
package childproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	Name    string
	LogPath string // stdout and stderr, in order of arrival
	cmd     *exec.Cmd
	addr    chan string // receives the bound address once
	exited  chan struct{}
	err     error // set before exited is closed
}

// Start runs bin with args, writing its output to dir/name.log. addrKey
// names the JSON log attribute carrying the address the child bound
// ("grpc" for cachenode, "http" for worker): children listen on port 0 and
// report it, so there is no free-port race. An empty addrKey reads no
// address (WaitAddr then waits for the exit or ctx).
func Start(dir, name, addrKey, bin string, args ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	cmd.Stdout = logf
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, LogPath: logPath, cmd: cmd, addr: make(chan string, 1), exited: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		var once sync.Once
		sc := bufio.NewScanner(io.TeeReader(stderr, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if addrKey == "" || json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if a, ok := line[addrKey].(string); ok && a != "" {
				once.Do(func() { p.addr <- a })
			}
		}
		// A line over the scanner's limit ends the scan; the rest still
		// goes to the log, and the pipe is drained so the child never blocks.
		_, _ = io.Copy(logf, stderr)
	}()
	go func() {
		<-scanned
		p.err = cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// WaitAddr returns the address the child reported, or fails if it exits
// first or ctx ends.
func (p *Proc) WaitAddr(ctx context.Context) (string, error) {
	select {
	case a := <-p.addr:
		return a, nil
	case <-p.exited:
		return "", fmt.Errorf("%s exited before serving (%v); log: %s", p.Name, p.err, p.LogPath)
	case <-ctx.Done():
		return "", fmt.Errorf("%s: waiting for its address: %w", p.Name, ctx.Err())
	}
}

// Stop asks the child to exit (SIGTERM) and kills it after grace; the
// error says when it had to be killed.
func (p *Proc) Stop(grace time.Duration) error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return errors.New(p.Name + " did not stop on SIGTERM; killed")
	}
}

// WaitHTTP polls url with GET until it answers 200 or ctx ends (a worker
// or llama-server answers 503 while it loads its model).
func WaitHTTP(ctx context.Context, url string) error {
	for delay := 10 * time.Millisecond; ; delay = min(2*delay, 500*time.Millisecond) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", url, ctx.Err())
		case <-time.After(delay):
		}
	}
}
