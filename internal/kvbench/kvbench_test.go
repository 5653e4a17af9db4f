package kvbench

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

func testNS(t *testing.T) prefix.Namespace {
	t.Helper()
	ns, err := Llama3_8B().Namespace()
	if err != nil {
		t.Fatal(err)
	}
	return ns
}

func TestWorkloadDeterministic(t *testing.T) {
	ns := testNS(t)
	cfg := DefaultWorkload()
	a := GenerateWorkload(ns, 64, cfg)
	b := GenerateWorkload(ns, 64, cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same config gave different workloads")
	}
	cfg.Seed++
	c := GenerateWorkload(ns, 64, cfg)
	if c.Blocks[0].Key == a.Blocks[0].Key {
		t.Fatal("another seed gave the same system prompt")
	}
}

func TestWorkloadSharingStructure(t *testing.T) {
	ns := testNS(t)
	cfg := WorkloadConfig{Seed: 3, Requests: 400, SystemBlocks: 3, Documents: 5, DocBlocks: 4, QuestionBlocks: 2,
		Conversations: 6, Turns: 3, TurnBlocks: 2, DocShare: 0.5, ZipfS: 1}
	w := GenerateWorkload(ns, 16, cfg)
	refs := make([]int, len(w.Blocks))
	lastChat := map[int][]int{}
	docPrefix := map[int][]int{}
	kinds := map[string]int{}
	for ri, r := range w.Requests {
		kinds[r.Kind]++
		// Every request starts with the shared system prompt.
		if !reflect.DeepEqual(r.Blocks[:3], w.Requests[0].Blocks[:3]) {
			t.Fatalf("request %d does not start with the system prompt", ri)
		}
		// Chains are consistent: parents and positions.
		for j, bi := range r.Blocks {
			b := w.Blocks[bi]
			refs[bi]++
			if j == 0 {
				if b.HasParent {
					t.Fatalf("request %d: first block has a parent", ri)
				}
			} else if !b.HasParent || b.Parent != w.Blocks[r.Blocks[j-1]].Key {
				t.Fatalf("request %d block %d: parent is not the previous block", ri, j)
			}
			if b.Pos != uint32(16*j) {
				t.Fatalf("request %d block %d at position %d", ri, j, b.Pos)
			}
		}
		switch r.Kind {
		case "doc":
			if len(r.Blocks) != 3+4+2 {
				t.Fatalf("doc request of %d blocks", len(r.Blocks))
			}
			p := r.Blocks[:7]
			if prev, ok := docPrefix[r.Target]; ok && !reflect.DeepEqual(prev, p) {
				t.Fatalf("two questions about document %d have different document blocks", r.Target)
			}
			docPrefix[r.Target] = p
		case "chat":
			// A turn extends the previous request of its conversation, or
			// re-asks the last turn.
			if prev, ok := lastChat[r.Target]; ok {
				if len(r.Blocks) < len(prev) || !reflect.DeepEqual(r.Blocks[:len(prev)], prev) {
					t.Fatalf("chat request %d does not extend its conversation's history", ri)
				}
			}
			if n := len(r.Blocks); n < 3+2 || n > 3+3*2 || (n-3)%2 != 0 {
				t.Fatalf("chat request of %d blocks", n)
			}
			lastChat[r.Target] = r.Blocks
		default:
			t.Fatalf("kind %q", r.Kind)
		}
	}
	if kinds["doc"] < 150 || kinds["chat"] < 150 {
		t.Fatalf("kinds %v, want about half each", kinds)
	}
	// Questions are never shared: their blocks are referenced once.
	for _, r := range w.Requests {
		if r.Kind == "doc" {
			for _, bi := range r.Blocks[7:] {
				if refs[bi] != 1 {
					t.Fatalf("a question block is referenced %d times", refs[bi])
				}
			}
		}
	}
	// Distinct blocks have distinct keys.
	seen := map[prefix.Key]bool{}
	for _, b := range w.Blocks {
		if seen[b.Key] {
			t.Fatal("duplicate key among distinct blocks")
		}
		seen[b.Key] = true
	}
	// Zipf: the most popular document is asked about most.
	count := map[int]int{}
	for _, r := range w.Requests {
		if r.Kind == "doc" {
			count[r.Target]++
		}
	}
	for d := 1; d < 5; d++ {
		if count[0] < count[d] {
			t.Fatalf("document popularity %v: rank 0 is not the most popular", count)
		}
	}
	if h := w.IdealHitRatio(); h < 0.5 || h > 1 {
		t.Fatalf("ideal hit ratio %v", h)
	}
}

func TestIdealHitRatio(t *testing.T) {
	w := &Workload{Blocks: make([]Block, 4), Requests: []Request{
		{Blocks: []int{0, 1}},    // 0 hits of 2
		{Blocks: []int{0, 1, 2}}, // 2 hits of 3
		{Blocks: []int{3, 1}},    // 0: block 1 after a miss does not count
	}}
	if got, want := w.IdealHitRatio(), 2.0/7; math.Abs(got-want) > 1e-12 {
		t.Fatalf("IdealHitRatio = %v, want %v", got, want)
	}
}

func TestZipf(t *testing.T) {
	z := NewZipf(10, 1.2)
	sum := 0.0
	for k := range 10 {
		sum += z.Prob(k)
		if k > 0 && z.Prob(k) >= z.Prob(k-1) {
			t.Fatalf("P(%d) = %v not below P(%d) = %v", k, z.Prob(k), k-1, z.Prob(k-1))
		}
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Fatalf("probabilities sum to %v", sum)
	}
	if want := 1 / math.Pow(2, 1.2); math.Abs(z.Prob(1)/z.Prob(0)-want) > 1e-12 {
		t.Fatalf("P(1)/P(0) = %v, want %v", z.Prob(1)/z.Prob(0), want)
	}
	u := NewZipf(4, 0)
	for k := range 4 {
		if math.Abs(u.Prob(k)-0.25) > 1e-12 {
			t.Fatalf("s=0: P(%d) = %v", k, u.Prob(k))
		}
	}
	// Sampled frequencies follow the distribution, deterministically.
	const n = 200000
	freq := make([]int, 10)
	rng := rand.New(rand.NewPCG(1, 2))
	for range n {
		freq[z.Sample(rng)]++
	}
	for k, f := range freq {
		p := z.Prob(k)
		sd := math.Sqrt(n * p * (1 - p))
		if math.Abs(float64(f)-n*p) > 5*sd {
			t.Fatalf("rank %d drawn %d times, expected %.0f ± %.0f", k, f, n*p, sd)
		}
	}
	rng2 := rand.New(rand.NewPCG(1, 2))
	freq2 := make([]int, 10)
	for range n {
		freq2[z.Sample(rng2)]++
	}
	if !reflect.DeepEqual(freq, freq2) {
		t.Fatal("same seed, different samples")
	}
	if NewZipf(1, 1).Sample(rng) != 0 || NewZipf(0, 1).Sample(rng) != 0 {
		t.Fatal("a single rank must always be drawn")
	}
}

func TestPercentile(t *testing.T) {
	ms := func(xs ...float64) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x * float64(time.Millisecond))
		}
		return out
	}
	var hundred []float64
	for i := 100; i >= 1; i-- { // unsorted on purpose
		hundred = append(hundred, float64(i))
	}
	cases := []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(1, 2), 50, 1500 * time.Microsecond},
		{ms(hundred...), 50, 50500 * time.Microsecond},
		{ms(hundred...), 99, 99010 * time.Microsecond},
		{ms(hundred...), 0, time.Millisecond},
		{ms(hundred...), 100, 100 * time.Millisecond},
		{ms(hundred...), 150, 100 * time.Millisecond},
		{ms(3, 1, 2), 25, 1500 * time.Microsecond},
	}
	for _, c := range cases {
		if got := Percentile(c.in, c.p); got != c.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
	xs := []float64{5, 1, 3}
	if Median(xs) != 3 || Median([]float64{4, 1, 3, 2}) != 2.5 || Median(nil) != 0 {
		t.Fatal("Median")
	}
	if xs[0] != 5 {
		t.Fatal("Median modified its input")
	}
}

func TestTableRender(t *testing.T) {
	tb := &Table{Header: []string{"a", "bb"}, Rows: [][]string{{"x|y", "1"}, {"long cell"}}}
	var b bytes.Buffer
	if err := tb.Render(&b); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"| a         | bb  |\n" +
		"|-----------|-----|\n" +
		"| x\\|y      | 1   |\n" +
		"| long cell |     |\n"
	if b.String() != want {
		t.Fatalf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestReportTableAndJSON(t *testing.T) {
	yes := true
	rep := &Report{Rows: []Row{
		{Phase: "fetch", Metric: "fetch", Unit: "GB/s", KVCache: 3, RedisPipe: 1, RedisMGET: 2, Target: ">= 2", Met: &yes},
		{Phase: "lookup", Metric: "p99", Unit: "ms", KVCache: 0.5, RedisPipe: 1, RedisMGET: math.NaN(), Lower: true},
		{Phase: "decode", Metric: "decode", Unit: "GB/s", KVCache: 1.5, RedisPipe: math.NaN(), RedisMGET: math.NaN()},
	}}
	if r := rep.Rows[0].Ratio(); r != 1.5 {
		t.Fatalf("throughput ratio %v, want 1.5 (against the better Redis mode)", r)
	}
	if r := rep.Rows[1].Ratio(); r != 2 {
		t.Fatalf("latency ratio %v, want 2", r)
	}
	if r := rep.Rows[2].Ratio(); !math.IsNaN(r) {
		t.Fatalf("ratio without Redis %v, want NaN", r)
	}
	var b bytes.Buffer
	if err := rep.Table().Render(&b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"| 3.00 GB/s", "| 1.50x", "| 0.500 ms", "| 2.00x", "| —", "| yes"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, b.String())
		}
	}
	b.Reset()
	if err := rep.JSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not parse: %v\n%s", err, b.String())
	}
	if v, ok := back.Rows[1]["redis_mget"]; !ok || v != nil {
		t.Fatalf("NaN must be null in JSON, got %v", v)
	}
	if back.Rows[0]["kvcache_vs_best_redis"] != 1.5 || back.Rows[0]["kvcache"] != 3.0 {
		t.Fatalf("row 0 = %v", back.Rows[0])
	}
}

func TestEncoderBlocksVerify(t *testing.T) {
	g := Geometry{Model: "t", Layers: 2, KVHeads: 2, HeadDim: 16, BlockTokens: 16, Codec: kvblock.Int4}
	ns, err := g.Namespace()
	if err != nil {
		t.Fatal(err)
	}
	w := GenerateWorkload(ns, g.BlockTokens, WorkloadConfig{Requests: 10})
	enc := NewEncoder(g, 1)
	for _, b := range w.Blocks[:8] {
		data, err := enc.Encode(nil, b)
		if err != nil {
			t.Fatal(err)
		}
		h, err := kvblock.Inspect(data)
		if err != nil {
			t.Fatal(err)
		}
		if h.HasParent != b.HasParent || h.Parent != b.Parent || h.StartPos != b.Pos || h.Codec != g.Codec {
			t.Fatalf("header %+v does not describe block %+v", h, b)
		}
		again, _ := NewEncoder(g, 1).Encode(nil, b)
		if !bytes.Equal(data, again) {
			t.Fatal("encoding is not deterministic")
		}
	}
	if g.BlockBytes() == 0 || Llama3_8B().BlockBytes() < 4<<20 {
		t.Fatalf("block sizes %d, %d", g.BlockBytes(), Llama3_8B().BlockBytes())
	}
}

func TestJudgeDecodeAtEqualParallelism(t *testing.T) {
	row := func(metric string, v float64, target string) Row {
		r := newRow("p", metric, "GB/s")
		r.KVCache, r.Target = v, target
		return r
	}
	r := &runner{rep: &Report{Rows: []Row{
		row("fetch", 3, ">= 2 GB/s"),
		row("decode", 1.2, ""),                                // 1 core: shown, not judged
		row("decode, all cores", 2.5, "never the bottleneck"), // below the fetch rate
		row("decode", 1.6, ""),
		row("decode, all cores", 3.1, "never the bottleneck"),
		row(cpuRatioMetric, 0.9, ">= 1"),
		row(cpuRatioMetric, 1.2, ">= 1"),
	}}}
	r.judge()
	rows := r.rep.Rows
	if rows[1].Met != nil || rows[3].Met != nil {
		t.Fatalf("1-core decode rows were judged: %+v %+v", rows[1], rows[3])
	}
	if rows[2].Met == nil || *rows[2].Met {
		t.Fatalf("all-cores decode at 2.5 GB/s against a 3 GB/s fetch: met %v", rows[2].Met)
	}
	if rows[4].Met == nil || !*rows[4].Met {
		t.Fatalf("all-cores decode at 3.1 GB/s against a 3 GB/s fetch: met %v", rows[4].Met)
	}
	if !strings.Contains(rows[4].Target, "3.00 GB/s") || !strings.Contains(rows[4].Target, "all cores") {
		t.Fatalf("target %q", rows[4].Target)
	}
	if rows[5].Met == nil || *rows[5].Met || rows[6].Met == nil || !*rows[6].Met {
		t.Fatalf("CPU ratios 0.9 and 1.2 judged %v, %v; want no, yes", rows[5].Met, rows[6].Met)
	}
}
