package kvctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kvcache/kvcache/internal/units"
	"github.com/kvcache/kvcache/pkg/client"
)

// ErrUnhealthy is returned by probe when the target is not serving, and by
// cluster when a member is not healthy.
var ErrUnhealthy = errors.New("unhealthy")

// clusterRow is one member in `kvctl cluster` output.
type clusterRow struct {
	client.Member
	Stats *statsJSON `json:"stats,omitempty"`
	// HitRatio is hits/(hits+misses) on the node, or null with no reads.
	HitRatio *float64 `json:"hit_ratio"`
	StatsErr string   `json:"stats_error,omitempty"`
}

func clusterCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster",
		Short: "Members, health, bytes, blocks and hit ratio; exit 1 unless all are healthy",
		Long: `Check every member named by --nodes once (DNS and SRV entries are
resolved) and print its state, source and counters. The exit status is 0
only when every member is healthy, so scripts and CI can gate on it.`,
		Example: `  kvctl cluster --nodes dnssrv:///_grpc._tcp.kvcache-headless
  kvctl cluster --nodes n1:7070,n2:7070 -o yaml`,
		Args: cobra.NoArgs,
		RunE: runE(g, runCluster),
	}
}

func runCluster(ctx context.Context, cmd *cobra.Command, g *globals) error {
	// Active checks run on demand (Refresh), not in the background: this
	// is a one-shot view.
	c, err := g.client()
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, g.timeout)
	c.Refresh(rctx)
	cancel()

	var rows []clusterRow
	unhealthy := 0
	for _, m := range c.Members() {
		r := clusterRow{Member: m}
		s, err := nodeStats(ctx, c, m.Addr)
		// A member that did not answer Stats is not healthy either, even if
		// its health check did not conclude within --timeout (a loaded
		// machine may not run it in time).
		if m.State != client.Healthy || err != nil {
			unhealthy++
		}
		if err != nil {
			r.StatsErr = err.Error()
		} else {
			r.Stats = s
			if n := s.Hits + s.Misses; n > 0 {
				h := float64(s.Hits) / float64(n)
				r.HitRatio = &h
			}
		}
		rows = append(rows, r)
	}
	if err := g.emit(cmd.OutOrStdout(), rows, func(w io.Writer) error { return printCluster(w, rows) }); err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("%w: no members found for %s", ErrUnhealthy, g.nodes)
	}
	if unhealthy > 0 {
		return fmt.Errorf("%w: %d of %d members not healthy", ErrUnhealthy, unhealthy, len(rows))
	}
	return nil
}

func printCluster(w io.Writer, rows []clusterRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tSOURCE\tID\tBLOCKS\tUSED\tCAPACITY\tHITS\tMISSES\tHIT%\tVERSION\tERROR")
	for _, r := range rows {
		errStr := r.LastError
		if errStr == "" {
			errStr = r.StatsErr
		}
		if r.Stats == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.Addr, r.State, r.Source, oneLine(errStr))
			continue
		}
		s := r.Stats
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Addr, r.State, r.Source, s.NodeID, s.Blocks,
			units.FormatBytes(float64(s.BytesUsed)), capacity(s.Capacity), s.Hits, s.Misses, pct(s.Hits, s.Hits+s.Misses), s.shortBuild(), oneLine(errStr))
	}
	return tw.Flush()
}

// oneLine keeps a gRPC error's first line short enough for a table.
func oneLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// probeCmd is a container health check: FROM scratch images have no shell
// or curl, so compose and the Dockerfiles run `kvctl probe` inside the image.
func probeCmd(g *globals) *cobra.Command {
	var grpcAddr, service, httpURL string
	cmd := &cobra.Command{
		Use:   "probe (--grpc ADDR | --http URL)",
		Short: "Exit 0 if a node (--grpc) or worker (--http) is healthy",
		Example: `  kvctl probe --grpc 127.0.0.1:7070
  kvctl probe --http http://127.0.0.1:8080/healthz --timeout 2s`,
		Args: cobra.NoArgs,
		RunE: runE(g, func(ctx context.Context, cmd *cobra.Command, g *globals) error {
			return runProbe(ctx, cmd, g, grpcAddr, service, httpURL)
		}),
	}
	cmd.Flags().StringVar(&grpcAddr, "grpc", "", "check the gRPC health service at this address")
	cmd.Flags().StringVar(&service, "service", "kvcache.v1.KVCacheService", "gRPC health service name")
	cmd.Flags().StringVar(&httpURL, "http", "", "check that GET of this URL answers 2xx")
	cmd.MarkFlagsOneRequired("grpc", "http")
	cmd.MarkFlagsMutuallyExclusive("grpc", "http")
	return cmd
}

func runProbe(ctx context.Context, cmd *cobra.Command, g *globals, grpcAddr, service, httpURL string) error {
	target := grpcAddr
	if httpURL != "" {
		target = httpURL
	}
	ok := func() error {
		res := struct {
			Target string `json:"target"`
			Status string `json:"status"`
		}{target, "ok"}
		return g.emit(cmd.OutOrStdout(), res, func(w io.Writer) error {
			_, err := fmt.Fprintln(w, "ok")
			return err
		})
	}
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if httpURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, httpURL, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		tc, err := g.sec.tls()
		if err != nil {
			return err
		}
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: tc}}).Do(req)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnhealthy, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%w: %s answered %s", ErrUnhealthy, httpURL, resp.Status)
		}
		return ok()
	}
	creds, err := g.sec.grpcCreds()
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: %s is %s", ErrUnhealthy, grpcAddr, resp.GetStatus())
	}
	return ok()
}
