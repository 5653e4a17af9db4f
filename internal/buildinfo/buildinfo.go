// Package buildinfo says which build a binary is: the version and commit
// that `make build` stamps with -ldflags, or else what the Go toolchain
// recorded in the binary (module version, vcs.revision, vcs.modified), and
// the Go version. Every binary prints it for --version, in its first log
// line, in Stats, and as the kvcache_build_info gauge.
package buildinfo

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Set by the linker: make build passes
// -X github.com/kvcache/kvcache/internal/buildinfo.version=... and .commit=...
var version, commit string

// Unknown is reported for a field that neither -ldflags nor the Go
// toolchain recorded (e.g. go test binaries, or builds with -buildvcs=false).
const Unknown = "unknown"

// Info identifies a build.
type Info struct {
	// Version is the release (a tag such as v1.2.0), the module pseudo-version
	// the toolchain derived from git, or "devel".
	Version string `json:"version" yaml:"version"`
	// Commit is the full git revision, with "-dirty" when the tree had
	// uncommitted changes.
	Commit string `json:"commit" yaml:"commit"`
	// GoVersion is the toolchain that built the binary, e.g. go1.26.8.
	GoVersion string `json:"go_version" yaml:"go_version"`
}

// Get returns this binary's build information.
func Get() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return from(bi, version, commit)
}

// from merges linker-set values (which win) with what the toolchain
// recorded in bi (nil when the binary has none).
func from(bi *debug.BuildInfo, ldVersion, ldCommit string) Info {
	i := Info{Version: ldVersion, Commit: ldCommit, GoVersion: Unknown}
	if bi != nil {
		i.GoVersion = bi.GoVersion
		if i.Version == "" {
			i.Version = bi.Main.Version
		}
		if i.Commit == "" {
			var rev string
			dirty := false
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					dirty = s.Value == "true"
				}
			}
			if rev != "" && dirty {
				rev += "-dirty"
			}
			i.Commit = rev
		}
	}
	// "(devel)" is what the toolchain says for a build outside module mode
	// or without VCS information: say so in plain words.
	if i.Version == "" || i.Version == "(devel)" {
		i.Version = "devel"
	}
	if i.Commit == "" {
		i.Commit = Unknown
	}
	return i
}

// String is the one-line form --version prints after the program name:
// "v1.2.0 (commit 1a2b3c4d5e6f, go1.26.8)".
func (i Info) String() string {
	rev, dirty := strings.CutSuffix(i.Commit, "-dirty")
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return fmt.Sprintf("%s (commit %s, %s)", i.Version, rev, i.GoVersion)
}

// LogAttr is the "build" group a binary puts in its first log line.
func (i Info) LogAttr() slog.Attr {
	return slog.Group("build", "version", i.Version, "commit", i.Commit, "go", i.GoVersion)
}

// Collector is the kvcache_build_info gauge: always 1, the build in its
// labels (the Prometheus convention for joining build data onto series).
func (i Info) Collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "kvcache_build_info",
		Help:        "Always 1; labels name the build: version, commit and Go version.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "goversion": i.GoVersion},
	})
	g.Set(1)
	return g
}

// Flag registers -version on fs. After fs.Parse, a true value means: call
// Print and exit 0 without doing anything else.
func Flag(fs *flag.FlagSet) *bool {
	return fs.Bool("version", false, "print the version, commit and Go version, then exit")
}

// Print writes "program version (commit ..., go...)" and a newline to w.
func Print(w io.Writer, program string) error {
	_, err := fmt.Fprintf(w, "%s %s\n", program, Get())
	return err
}
