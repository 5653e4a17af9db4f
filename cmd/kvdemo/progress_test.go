package main

import (
	"bytes"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the heartbeat goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestProgressHeartbeatUntilStopped(t *testing.T) {
	var out syncBuffer
	p := newProgress(&out, time.Millisecond)
	stop := p.during("request 1/3 on worker-1")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "still running") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no heartbeat in 10s:\n%s", out.String())
		}
		time.Sleep(time.Millisecond)
	}
	stop()
	n := strings.Count(out.String(), "\n")
	time.Sleep(20 * time.Millisecond) // 20 heartbeat intervals: none may follow stop
	got := out.String()
	if strings.Count(got, "\n") != n {
		t.Errorf("heartbeat after stop:\n%s", got)
	}
	line := regexp.MustCompile(`^\[\s*\d+\.\ds\] request 1/3 on worker-1(: still running after \d+s)?$`)
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		if !line.MatchString(l) {
			t.Errorf("line %q is not a stamped progress line", l)
		}
	}
	if !strings.HasPrefix(got, "[") || !strings.Contains(strings.SplitN(got, "\n", 2)[0], "request 1/3 on worker-1") {
		t.Errorf("the first line must say what started:\n%s", got)
	}
}
