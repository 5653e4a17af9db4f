package buildinfo

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestFrom(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	vcs := func(modified string) *debug.BuildInfo {
		return &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201120000-0123456789ab"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}}
	}
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		ldVersion, ldRev string
		want             Info
		str              string
	}{
		{"ldflags win", vcs("false"), "v1.2.0", "feedfacefeedfacefeedfacefeedfacefeedface",
			Info{"v1.2.0", "feedfacefeedfacefeedfacefeedfacefeedface", "go1.26.8"}, "v1.2.0 (commit feedfacefeed, go1.26.8)"},
		{"toolchain vcs stamp", vcs("false"), "", "",
			Info{"v0.0.0-20261201120000-0123456789ab", rev, "go1.26.8"}, "v0.0.0-20261201120000-0123456789ab (commit 0123456789ab, go1.26.8)"},
		{"uncommitted changes", vcs("true"), "", "",
			Info{"v0.0.0-20261201120000-0123456789ab", rev + "-dirty", "go1.26.8"}, "v0.0.0-20261201120000-0123456789ab (commit 0123456789ab-dirty, go1.26.8)"},
		{"no vcs (go test, -buildvcs=false)", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			Info{"devel", Unknown, "go1.26.8"}, "devel (commit unknown, go1.26.8)"},
		{"no build info at all", nil, "", "", Info{"devel", Unknown, Unknown}, "devel (commit unknown, unknown)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := from(tc.bi, tc.ldVersion, tc.ldRev)
			if got != tc.want {
				t.Errorf("from = %+v, want %+v", got, tc.want)
			}
			if s := got.String(); s != tc.str {
				t.Errorf("String = %q, want %q", s, tc.str)
			}
		})
	}
}

func TestCollector(t *testing.T) {
	i := Info{Version: "v1.2.0", Commit: "abc", GoVersion: "go1.26.8"}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(i.Collector())
	want := `# HELP kvcache_build_info Always 1; labels name the build: version, commit and Go version.
# TYPE kvcache_build_info gauge
kvcache_build_info{commit="abc",goversion="go1.26.8",version="v1.2.0"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestPrintAndGet(t *testing.T) {
	var b bytes.Buffer
	if err := Print(&b, "cachenode"); err != nil {
		t.Fatal(err)
	}
	// A test binary carries build info: at least the Go version is known.
	g := Get()
	if g.GoVersion == Unknown || !strings.HasPrefix(b.String(), "cachenode "+g.Version+" (commit ") || !strings.Contains(b.String(), g.GoVersion) {
		t.Errorf("Print = %q, Get = %+v", b.String(), g)
	}
}
