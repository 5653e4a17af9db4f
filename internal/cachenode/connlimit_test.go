package cachenode_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
)

// TestMetricsConnsPerAddr: over real sockets, the metrics listener holds
// at most --metrics-conns-per-addr connections from one IP address; the
// next one from that address is closed without an answer, another
// address still scrapes /metrics (and sees the refusal counted), and a
// slot freed by a closed connection is usable again.
func TestMetricsConnsPerAddr(t *testing.T) {
	for _, tc := range []struct {
		name    string
		perAddr int // Config.MetricsConnsPerAddr
		want    int // connections held from one address
	}{
		{"default", 0, 8},
		{"configured", 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testnode.Start(t, cachenode.Config{MetricsListen: "127.0.0.1:0", MetricsConnsPerAddr: tc.perAddr})
			ctx := ctxT(t)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			// Each held connection serves a keep-alive request, then idles
			// holding its slot (the idle timeout is a minute).
			for i := range tc.want {
				c, err := net.Dial("tcp", n.MetricsAddr())
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
				if code, err := healthz(c); err != nil || code != http.StatusOK {
					t.Fatalf("connection %d of %d: status %d, %v", i+1, tc.want, code, err)
				}
			}
			extra, err := net.Dial("tcp", n.MetricsAddr())
			if err != nil {
				t.Fatal(err) // the kernel accepts; the node closes it
			}
			defer extra.Close()
			if code, err := healthz(extra); err == nil {
				t.Fatalf("connection %d from one address answered %d, want it closed", tc.want+1, code)
			}

			other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
				LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.MetricsAddr()+"/metrics", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := other.Do(req)
			if err != nil {
				t.Skipf("dial from 127.0.0.2: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("another address's scrape: %s, %v", resp.Status, err)
			}
			if !strings.Contains(string(body), "\nkvcache_metrics_conns_refused_total 1\n") {
				t.Errorf("scrape does not count the one refused connection:\n%s", grepLines(string(body), "kvcache_metrics_conns"))
			}

			held[0].Close()
			held = held[1:]
			deadline := time.Now().Add(20 * time.Second)
			for {
				c, err := net.Dial("tcp", n.MetricsAddr())
				if err != nil {
					t.Fatal(err)
				}
				code, err := healthz(c)
				if err == nil && code == http.StatusOK {
					held = append(held, c)
					break
				}
				c.Close()
				if time.Now().After(deadline) || ctx.Err() != nil {
					t.Fatalf("a freed slot is not reused: %d, %v", code, err)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// healthz sends GET /healthz with keep-alive on c and reads the status
// line; an error means the connection closed without an answer.
func healthz(c net.Conn) (int, error) {
	if err := c.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		return 0, err
	}
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, err
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
