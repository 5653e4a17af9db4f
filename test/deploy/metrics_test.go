// Package deploy_test checks the operator-facing files against the code:
// docs/metrics.md against the node's and the worker's registries, the
// Grafana dashboard against docs/metrics.md, and the Kubernetes and compose
// files by rendering and strictly decoding them.
package deploy_test

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// repoRoot is the module root, two levels above this file.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// docMetric is one row of the table in docs/metrics.md.
type docMetric struct {
	name   string   // "kvcache_store_bytes", or a family prefix like "go_*"
	typ    string   // counter, gauge, histogram; empty for a prefix row
	labels []string // sorted
	by     []string // "node", "worker"
}

func (m docMetric) prefix() (string, bool) { return strings.CutSuffix(m.name, "*") }

// readMetricsDoc parses the metric table: rows whose first cell is a
// backquoted name, columns metric | type | labels | exported by | meaning.
func readMetricsDoc(t *testing.T) []docMetric {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "docs", "metrics.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []docMetric
	split := func(s string) []string {
		var r []string
		for _, x := range strings.Split(s, ",") {
			if x = strings.TrimSpace(x); x != "" {
				r = append(r, x)
			}
		}
		slices.Sort(r)
		return r
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 7 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		if !strings.HasPrefix(name, "kvcache_") && !strings.HasSuffix(name, "*") {
			continue // the queries table
		}
		out = append(out, docMetric{name: name, typ: strings.TrimSpace(cells[2]), labels: split(cells[3]), by: split(cells[4])})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("docs/metrics.md: only %d metric rows parsed", len(out))
	}
	return out
}

// registered reports whether reg holds a metric family named name. A
// registry refuses a descriptor whose fully-qualified name it already has
// with a different help string (prometheus.Desc's consistency rules), so
// a probe with a unique help string is refused exactly when the name is
// taken; an accepted probe is unregistered again. This sees every
// registered family, also vectors that have no series yet.
func registered(reg *prometheus.Registry, name string) bool {
	probe := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: "docs/metrics.md probe; never exported"})
	if err := reg.Register(probe); err != nil {
		return true
	}
	reg.Unregister(probe)
	return false
}

// TestMetricsDocMatchesRegistries: every documented metric is registered
// with its type and labels by each component the table names, and every
// family either component exports is documented for it.
func TestMetricsDocMatchesRegistries(t *testing.T) {
	doc := readMetricsDoc(t)
	regs := registries(t)
	for src, reg := range regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("%s: gather: %v", src, err)
		}
		exported := map[string]bool{}
		for _, mf := range mfs {
			name := mf.GetName()
			exported[name] = true
			var row *docMetric
			for i, d := range doc {
				p, wild := d.prefix()
				if slices.Contains(d.by, src) && (d.name == name || wild && strings.HasPrefix(name, p)) {
					row = &doc[i]
					break
				}
			}
			if row == nil {
				t.Errorf("%s exports %s (%s: %q), which docs/metrics.md does not list for %s: add a row", src, name, mf.GetType(), mf.GetHelp(), src)
				continue
			}
			if _, wild := row.prefix(); wild {
				continue
			}
			if typ := strings.ToLower(mf.GetType().String()); typ != row.typ {
				t.Errorf("%s: %s is a %s, docs/metrics.md says %s", src, name, typ, row.typ)
			}
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, l.GetName())
				}
				slices.Sort(labels)
				if !slices.Equal(labels, row.labels) {
					t.Errorf("%s: %s has labels %v, docs/metrics.md says %v", src, name, labels, row.labels)
					break
				}
			}
		}
		for _, d := range doc {
			if !slices.Contains(d.by, src) {
				continue
			}
			if p, wild := d.prefix(); wild {
				found := false
				for n := range exported {
					found = found || strings.HasPrefix(n, p)
				}
				if !found {
					t.Errorf("docs/metrics.md lists %s for %s, but %s exports no such metric", d.name, src, src)
				}
			} else if !registered(reg, d.name) {
				t.Errorf("docs/metrics.md lists %s for %s, but %s does not register it: remove or fix the row", d.name, src, src)
			}
		}
	}
	for _, d := range doc {
		for _, src := range d.by {
			if regs[src] == nil {
				t.Errorf("docs/metrics.md: %s is exported by %q; want node or worker", d.name, src)
			}
		}
	}
}

// TestRegisteredProbe: the probe itself tells a registered family (also
// an empty vector) from an unknown name, and leaves no trace.
func TestRegisteredProbe(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "x"}, []string{"a"}))
	if !registered(reg, "x_total") || registered(reg, "y_total") || registered(reg, "y_total") {
		t.Fatal("probe wrong")
	}
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("probe left %d families behind", len(mfs))
	}
}
