package kvbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/plots"
	"github.com/kvcache/kvcache/pkg/kvblock"
)

// A tiny run against an in-process node: two uniform block sizes, the
// fidelity phase, and the plots it writes.
func TestMainWritesPlots(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	dir := filepath.Join(t.TempDir(), "plots")
	var out, errb bytes.Buffer
	err := Main(context.Background(), &out, &errb, []string{
		"-node-mode", "inproc", "-nosync", "-tmp", t.TempDir(),
		"-workload=false", "-lookup=false", "-decode=false", "-grpc-row=false",
		"-target-block", "65536", "-target-bytes", "1048576", "-block-sizes", "256KiB",
		"-duration", "50ms", "-rounds", "1", "-writers", "2", "-c", "2", "-json", "-plot", dir,
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var want []string
	for _, f := range []string{plots.FileFetch, plots.FileFidelity} {
		for _, ext := range []string{".png", ".svg"} {
			p := filepath.Join(dir, f+ext)
			want = append(want, p)
			if !bytes.Contains(errb.Bytes(), []byte("kvbench: wrote "+p+"\n")) {
				t.Errorf("stderr does not name %s:\n%s", p, errb.String())
			}
		}
	}
	if n := bytes.Count(errb.Bytes(), []byte("kvbench: wrote ")); n != len(want) {
		t.Errorf("named %d files, want %d", n, len(want))
	}
}

func TestFidelityPhaseAgreesWithKVCtlSize(t *testing.T) {
	cfg := withDefaults(Config{})
	r := &runner{cfg: cfg, p: newProgress(nil), rep: &Report{}}
	if err := r.fidelityPhase(); err != nil {
		t.Fatal(err)
	}
	g := cfg.Geometry
	var names []string
	cos := map[string]float64{}
	for _, c := range r.rep.Codecs {
		names = append(names, c.Codec)
		cos[c.Codec] = c.AttentionCosine
		codec, err := kvblock.ParseCodec(c.Codec)
		if err != nil {
			t.Fatal(err)
		}
		// The header and scales spread over the run's blocks, as kvctl size
		// --block-tokens prints them.
		s := kvblock.Shape{Tokens: g.BlockTokens, Layers: g.Layers, KVHeads: g.KVHeads, HeadDim: g.HeadDim}
		if want := float64(kvblock.EncodedSize(codec, s, 0)) / float64(g.BlockTokens); c.BytesPerToken != want {
			t.Errorf("%s: %v bytes per token, want %v", c.Codec, c.BytesPerToken, want)
		}
	}
	var all []string
	for _, c := range kvblock.Codecs() {
		all = append(all, c.String())
	}
	if !slices.Equal(names, all) {
		t.Fatalf("codecs %v, want %v", names, all)
	}
	// Fewer bits, less fidelity; f16 is exact on f16 input.
	if cos["f16"] < 0.999999 || !(cos["int8"] > cos["int4"] && cos["int4"] > cos["int2"]) {
		t.Errorf("attention cosines %v: want f16 ~1 > int8 > int4 > int2", cos)
	}
	charts := r.rep.Charts()
	if len(charts) != 1 || charts[0].File != plots.FileFidelity || charts[0].Series[0].Name != plots.SeriesAttention {
		t.Fatalf("charts %+v, want the fidelity chart with the attention series", charts)
	}
	if got := charts[0].Series[0].Labels; !slices.Equal(got, all) {
		t.Errorf("fidelity points labelled %v, want %v", got, all)
	}
}

func TestChartsFetchSeriesSkipUnmeasured(t *testing.T) {
	row := func(kv, rpc, pipe, mget float64) Row {
		r := newRow("p", "fetch", "GB/s")
		r.KVCache, r.KVGRPC, r.RedisPipe, r.RedisMGET = kv, rpc, pipe, mget
		return r
	}
	nan := newRow("", "", "").KVCache
	rep := &Report{BlockFetch: []BlockFetch{
		{BlockBytes: 1 << 20, Fetch: row(2.4, 1.1, 1.3, nan)},
		{BlockBytes: 64 << 10, Fetch: row(1.2, 0.6, 0.9, nan)},
	}}
	charts := rep.Charts()
	if len(charts) != 1 || charts[0].File != plots.FileFetch {
		t.Fatalf("charts %+v", charts)
	}
	var names []string
	for _, s := range charts[0].Series {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"kvcache", "kvcache gRPC only", "redis pipelined"}) {
		t.Errorf("series %v: an unmeasured backend must not be a series", names)
	}
	if got := charts[0].Series[0].Points; !slices.Equal(got, []plots.Point{{X: 64 << 10, Y: 1.2}, {X: 1 << 20, Y: 2.4}}) {
		t.Errorf("kvcache points %v, want by block size", got)
	}
}

// TestDecodeRoundsInterleavedWithFetch runs kvbench with the decode phase
// on a small geometry and checks that every target fetch round is followed
// by a decode round (one sample per round per codec), that the report
// gives the per-round ratio to the fetch and the CPU per GB of decode, and
// that the all-cores rate is judged against the fetch rate.
func TestDecodeRoundsInterleavedWithFetch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node")
	}
	const rounds = 2
	var out, errb bytes.Buffer
	err := Main(context.Background(), &out, &errb, []string{
		"-node-mode", "inproc", "-nosync", "-tmp", t.TempDir(),
		"-layers", "2", "-kv-heads", "2", "-head-dim", "64", "-block-tokens", "16",
		"-workload=false", "-lookup=false", "-fidelity=false", "-grpc-row=false",
		"-target-block", "65536", "-target-bytes", "1048576",
		"-duration", "40ms", "-rounds", fmt.Sprint(rounds), "-writers", "2", "-c", "2", "-json",
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, errb.String())
	}
	var rep struct {
		Rows    []map[string]any     `json:"rows"`
		Samples map[string][]float64 `json:"samples"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	multi := runtime.GOMAXPROCS(0) > 1
	for _, c := range []string{"int8", "int4"} {
		if n := len(rep.Samples["decode "+c+"/all cores"]); n != rounds {
			t.Errorf("%s: %d all-cores decode samples, want one per fetch round (%d)", c, n, rounds)
		}
		ratios := rep.Samples["decode "+c+"/all cores/ratio_to_fetch"]
		if len(ratios) != rounds {
			t.Errorf("%s: %d ratio samples, want %d", c, len(ratios), rounds)
		}
		found := map[string]any{}
		for _, r := range rep.Rows {
			if ph, _ := r["phase"].(string); strings.HasPrefix(ph, "decode "+c+" to float32, all cores") {
				found[r["metric"].(string)] = r
			}
		}
		for _, m := range []string{"CPU per GB", "decode ÷ fetch, same rounds (median of per-round ratios)"} {
			r, ok := found[m].(map[string]any)
			if !ok {
				t.Errorf("%s: no %q row in %v", c, m, found)
				continue
			}
			if v, _ := r["kvcache"].(float64); !(v > 0) {
				t.Errorf("%s %q = %v", c, m, r["kvcache"])
			}
		}
		if multi {
			r, ok := found["decode, all cores"].(map[string]any)
			if !ok || r["met"] == nil || !strings.Contains(r["target"].(string), "fetch rate") {
				t.Errorf("%s: all-cores row not judged against the fetch: %v", c, r)
			}
			// The in-process node's CPU is this process's: the CPU ratio
			// is measured and judged.
			if r, ok := found[cpuRatioMetric].(map[string]any); !ok || r["met"] == nil || !(r["kvcache"].(float64) > 0) {
				t.Errorf("%s: CPU ratio row %v", c, r)
			}
		}
	}
}
