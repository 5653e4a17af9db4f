package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// proc is a child process whose stderr (JSON logs) goes to a file and is
// scanned for the address it bound.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	addr    chan string // receives the bound address once
	exited  chan struct{}
	err     error // set before exited is closed
}

// startProc runs bin with args. addrKey names the JSON log attribute that
// carries the bound address ("grpc" for cachenode, "http" for worker):
// children listen on port 0 and report, so there is no free-port race.
func startProc(dir, name, addrKey, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, addr: make(chan string, 1), exited: make(chan struct{})}
	var once sync.Once
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(io.TeeReader(stderr, logf))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if a, ok := line[addrKey].(string); ok && a != "" {
				once.Do(func() { p.addr <- a })
			}
		}
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

// waitAddr returns the bound address, or fails if the child exits first.
func (p *proc) waitAddr(ctx context.Context) (string, error) {
	select {
	case a := <-p.addr:
		return a, nil
	case <-p.exited:
		return "", fmt.Errorf("%s exited before serving (%v); log: %s", p.name, p.err, p.logPath)
	case <-ctx.Done():
		return "", fmt.Errorf("%s: waiting for its address: %w", p.name, ctx.Err())
	}
}

// stop asks the child to exit (SIGTERM), then kills it after grace.
func (p *proc) stop(grace time.Duration) error {
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
		return errors.New(p.name + " did not stop on SIGTERM; killed")
	}
}
