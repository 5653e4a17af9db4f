package deploy_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// promqlWords are PromQL keywords and aggregation modifiers: identifiers
// in an expression that are not metric names.
var promqlWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true,
}

// targetLabels are added by Prometheus when it scrapes, not by the code.
var targetLabels = []string{"instance", "job"}

var (
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reString   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	reMatchers = regexp.MustCompile(`\{([^}]*)\}`)
	reMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
	reGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	reIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	reNumber   = regexp.MustCompile(`^[0-9.eE+-]+$`)
)

// promqlRefs returns the metric names and label names an expression uses.
// It is a small scanner, not a parser: enough for the dashboard's queries,
// and it refuses what it does not understand by reporting it as a name.
func promqlRefs(expr string) (metrics, labels []string) {
	e := reString.ReplaceAllString(reRange.ReplaceAllString(expr, ""), `""`)
	for _, m := range reMatchers.FindAllStringSubmatch(e, -1) {
		for _, l := range reMatcher.FindAllStringSubmatch(m[1], -1) {
			labels = append(labels, l[1])
		}
	}
	e = reMatchers.ReplaceAllString(e, " ")
	for _, g := range reGrouping.FindAllStringSubmatch(e, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	e = reGrouping.ReplaceAllString(e, " ")
	e = strings.NewReplacer("$__rate_interval", " ", "$__interval", " ").Replace(e)
	for _, id := range reIdent.FindAllStringSubmatch(e, -1) {
		if id[1] != "" || promqlWords[id[0]] || reNumber.MatchString(id[0]) {
			continue // a function call, a keyword
		}
		metrics = append(metrics, id[0])
	}
	return metrics, labels
}

// TestDashboardQueriesExist: every query of deploy/grafana/kvcache.json
// names metrics and labels that docs/metrics.md (and so the code, by
// TestMetricsDocMatchesRegistries) has.
func TestDashboardQueriesExist(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "grafana", "kvcache.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID           string `json:"uid"`
		Title         string `json:"title"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name, Type string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("kvcache.json: %v", err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion < 30 {
		t.Errorf("dashboard needs uid, title and a current schemaVersion: %q %q %d", dash.UID, dash.Title, dash.SchemaVersion)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type string }) bool { return v.Type == "datasource" }) {
		t.Error("dashboard has no datasource variable: it would be tied to one Prometheus")
	}

	doc := readMetricsDoc(t)
	lookup := func(name string) (docMetric, bool) {
		for _, d := range doc {
			if d.name == name {
				return d, true
			}
			if p, wild := d.prefix(); wild && strings.HasPrefix(name, p) {
				return d, true
			}
		}
		return docMetric{}, false
	}
	ids := map[int]bool{}
	queries := 0
	for _, p := range dash.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no query or no size", p.Title)
		}
		for _, tg := range p.Targets {
			queries++
			metrics, labels := promqlRefs(tg.Expr)
			if len(metrics) == 0 {
				t.Errorf("panel %q: query %q names no metric", p.Title, tg.Expr)
			}
			allowed := slices.Clone(targetLabels)
			for _, m := range metrics {
				d, ok := lookup(m)
				if !ok {
					// A histogram's series carry suffixes.
					for _, suf := range []string{"_bucket", "_sum", "_count"} {
						if base, cut := strings.CutSuffix(m, suf); cut {
							if d, ok = lookup(base); ok && d.typ != "histogram" {
								ok = false
							}
							if ok && suf == "_bucket" {
								allowed = append(allowed, "le")
							}
							break
						}
					}
				}
				if !ok {
					t.Errorf("panel %q: %s is not in docs/metrics.md (query %q)", p.Title, m, tg.Expr)
					continue
				}
				allowed = append(allowed, d.labels...)
			}
			for _, l := range labels {
				if !slices.Contains(allowed, l) {
					t.Errorf("panel %q: label %q is on none of %v (query %q)", p.Title, l, metrics, tg.Expr)
				}
			}
		}
	}
	if queries < 15 {
		t.Errorf("only %d queries: the dashboard should cover nodes and workers", queries)
	}
}

// TestPromqlRefs pins the scanner on the shapes the dashboard uses.
func TestPromqlRefs(t *testing.T) {
	for _, tc := range []struct {
		expr            string
		metrics, labels []string
	}{
		{`sum by (method, code) (rate(kvcache_grpc_calls_total{code!~"OK|NotFound"}[$__rate_interval]))`,
			[]string{"kvcache_grpc_calls_total"}, []string{"code", "method", "code"}},
		{`histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[5m])))`, []string{"x_seconds_bucket"}, []string{"le"}},
		{`a / (b > 0)`, []string{"a", "b"}, nil},
		{`go_goroutines{job=~"$node_job"}`, []string{"go_goroutines"}, []string{"job"}},
		{`count by (version, commit) (kvcache_build_info) or vector(0)`, []string{"kvcache_build_info"}, []string{"version", "commit"}},
	} {
		m, l := promqlRefs(tc.expr)
		if !slices.Equal(m, tc.metrics) || !slices.Equal(l, tc.labels) {
			t.Errorf("%s: metrics %v labels %v, want %v %v", tc.expr, m, l, tc.metrics, tc.labels)
		}
	}
}
