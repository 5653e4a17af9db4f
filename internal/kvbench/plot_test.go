package kvbench

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
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
