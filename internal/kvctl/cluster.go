package kvctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

func runCluster(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	var nf nodeFlags
	nf.register(fs)
	asJSON := fs.Bool("json", false, "print JSON")
	strict := fs.Bool("strict", false, "exit non-zero unless every member is healthy")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	// Active checks run on demand (Refresh), not in the background: this
	// is a one-shot view.
	c, err := client.New(client.Config{Nodes: nf.list(), CallTimeout: nf.timeout, Replicas: 1,
		Health: client.HealthConfig{Interval: -1, Timeout: nf.timeout, EjectAfter: 1, WarmUp: -1}, RepairQueue: -1,
		// Health transitions are this command's output, not log lines.
		Logger: slog.New(slog.NewTextHandler(e.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn + 1}))})
	if err != nil {
		return err
	}
	defer c.Close()
	rctx, cancel := context.WithTimeout(ctx, nf.timeout)
	c.Refresh(rctx)
	cancel()

	var rows []clusterRow
	unhealthy := 0
	for _, m := range c.Members() {
		r := clusterRow{Member: m}
		if m.State != client.Healthy {
			unhealthy++
		}
		if s, err := c.NodeStats(ctx, m.Addr); err != nil {
			r.StatsErr = err.Error()
		} else {
			r.Stats = &statsJSON{NodeID: s.GetNodeId(), BytesUsed: s.GetBytesUsed(), Capacity: s.GetCapacityBytes(), Blocks: s.GetBlocks(),
				Hits: s.GetHits(), Misses: s.GetMisses(), Evictions: s.GetEvictions(), Puts: s.GetPuts(), PutBytes: s.GetPutBytes(), FileBytes: s.GetFileBytes()}
			if n := s.GetHits() + s.GetMisses(); n > 0 {
				h := float64(s.GetHits()) / float64(n)
				r.HitRatio = &h
			}
		}
		rows = append(rows, r)
	}
	if *asJSON {
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else if err := printCluster(e, rows); err != nil {
		return err
	}
	if len(rows) == 0 {
		return fmt.Errorf("%w: no members found for %s", ErrUnhealthy, nf.nodes)
	}
	if *strict && unhealthy > 0 {
		return fmt.Errorf("%w: %d of %d members not healthy", ErrUnhealthy, unhealthy, len(rows))
	}
	return nil
}

func printCluster(e *Env, rows []clusterRow) error {
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tSOURCE\tID\tBLOCKS\tUSED\tCAPACITY\tHITS\tMISSES\tHIT%\tERROR")
	for _, r := range rows {
		errStr := r.LastError
		if errStr == "" {
			errStr = r.StatsErr
		}
		if r.Stats == nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", r.Addr, r.State, r.Source, oneLine(errStr))
			continue
		}
		s := r.Stats
		capStr := "unlimited"
		if s.Capacity > 0 {
			capStr = units.FormatBytes(float64(s.Capacity))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\n", r.Addr, r.State, r.Source, s.NodeID, s.Blocks,
			units.FormatBytes(float64(s.BytesUsed)), capStr, s.Hits, s.Misses, pct(s.Hits, s.Hits+s.Misses), oneLine(errStr))
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

// runProbe is a container health check: FROM scratch images have no shell
// or curl, so compose runs `kvctl probe` from inside the image.
func runProbe(ctx context.Context, e *Env, args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	grpcAddr := fs.String("grpc", "", "check the gRPC health service at this address")
	service := fs.String("service", "kvcache.v1.KVCacheService", "gRPC health service name")
	httpURL := fs.String("http", "", "check that GET of this URL answers 2xx")
	timeout := fs.Duration("timeout", 2*time.Second, "deadline of the check")
	if err := parse(fs, e, args); err != nil {
		return err
	}
	if (*grpcAddr == "") == (*httpURL == "") {
		return fmt.Errorf("%w: give exactly one of --grpc or --http", ErrUsage)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *httpURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, *httpURL, nil)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUsage, err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrUnhealthy, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%w: %s answered %s", ErrUnhealthy, *httpURL, resp.Status)
		}
		fmt.Fprintln(e.Stdout, "ok")
		return nil
	}
	cc, err := grpc.NewClient(*grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	defer cc.Close()
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: *service})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnhealthy, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("%w: %s is %s", ErrUnhealthy, *grpcAddr, resp.GetStatus())
	}
	fmt.Fprintln(e.Stdout, "ok")
	return nil
}
