package childproc

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as the child: CHILDPROC_MODE selects
// what it does.
func TestMain(m *testing.M) {
	switch os.Getenv("CHILDPROC_MODE") {
	case "serve": // report an address among other log lines, run until SIGTERM
		fmt.Fprintln(os.Stderr, "not json")
		fmt.Fprintln(os.Stderr, `{"msg":"starting"}`)
		fmt.Fprintln(os.Stderr, `{"msg":"listening","grpc":"127.0.0.1:4242"}`)
		fmt.Println("to stdout")
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		<-c
		os.Exit(0)
	case "exit": // fail before reporting an address
		fmt.Fprintln(os.Stderr, `{"msg":"bad flag"}`)
		os.Exit(3)
	case "stubborn": // ignore SIGTERM
		signal.Ignore(syscall.SIGTERM)
		fmt.Fprintln(os.Stderr, `{"grpc":"127.0.0.1:1"}`)
		time.Sleep(time.Hour)
	}
	os.Exit(m.Run())
}

func start(t *testing.T, mode, addrKey string) *Proc {
	t.Helper()
	t.Setenv("CHILDPROC_MODE", mode)
	p, err := Start(t.TempDir(), mode, addrKey, os.Args[0], "-test.run=^$")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(time.Second) })
	return p
}

func TestStartReadsAddressAndStops(t *testing.T) {
	p := start(t, "serve", "grpc")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a, err := p.WaitAddr(ctx)
	if err != nil || a != "127.0.0.1:4242" {
		t.Fatalf("WaitAddr = %q, %v; want 127.0.0.1:4242", a, err)
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("Stop of a child that exits on SIGTERM: %v", err)
	}
	log, err := os.ReadFile(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"not json", `"grpc":"127.0.0.1:4242"`, "to stdout"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
}

func TestWaitAddrFailsWhenTheChildExits(t *testing.T) {
	p := start(t, "exit", "grpc")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := p.WaitAddr(ctx)
	if err == nil || !strings.Contains(err.Error(), "exited before serving") || !strings.Contains(err.Error(), p.LogPath) {
		t.Fatalf("WaitAddr = %v; want an exit error naming the log", err)
	}
}

func TestWaitAddrWithoutKeyWaitsForCtx(t *testing.T) {
	p := start(t, "serve", "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if a, err := p.WaitAddr(ctx); err == nil {
		t.Fatalf("WaitAddr with no addrKey = %q; want the ctx error", a)
	}
}

func TestStopKillsAStubbornChild(t *testing.T) {
	p := start(t, "stubborn", "grpc")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.WaitAddr(ctx); err != nil { // it has ignored SIGTERM by now
		t.Fatal(err)
	}
	if err := p.Stop(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Stop = %v; want the killed error", err)
	}
}

func TestWaitHTTP(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := WaitHTTP(ctx, srv.URL); err != nil || calls.Load() != 3 {
		t.Fatalf("WaitHTTP = %v after %d calls; want nil after 3", err, calls.Load())
	}
	short, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }))
	defer down.Close()
	if err := WaitHTTP(short, down.URL); err == nil {
		t.Fatal("WaitHTTP of a server that never answers 200 returned nil")
	}
}
