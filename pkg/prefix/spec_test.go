package prefix_test

import (
	"bufio"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// specVectors reads the fenced "vectors" blocks of docs/keys.md so the
// published vectors, not a copy of them, are what the test checks.
func specVectors(t *testing.T) [][]string {
	t.Helper()
	f, err := os.Open("../../docs/keys.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines [][]string
	in := false
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		switch {
		case l == "```vectors":
			in = true
		case l == "```":
			in = false
		case in && l != "":
			lines = append(lines, strings.Fields(l))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(lines) < 4 {
		t.Fatalf("docs/keys.md has %d vector lines, want at least 4", len(lines))
	}
	return lines
}

func fields(t *testing.T, f []string) map[string]string {
	m := map[string]string{}
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("bad field %q", kv)
		}
		m[k] = v
	}
	return m
}

func tokens(t *testing.T, s string) []uint32 {
	if s == "" {
		return nil
	}
	var out []uint32
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, uint32(v))
	}
	return out
}

func atoi(t *testing.T, s string) int {
	v, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSpecVectors(t *testing.T) {
	for _, line := range specVectors(t) {
		switch line[0] {
		case "vector":
			t.Run(line[1], func(t *testing.T) {
				m := fields(t, line[1:])
				theta, err := strconv.ParseFloat(m["theta"], 64)
				if err != nil {
					t.Fatal(err)
				}
				p := prefix.Params{
					Model: m["model"], WeightsDigest: m["weights"],
					Layers: atoi(t, m["layers"]), KVHeads: atoi(t, m["kvheads"]), HeadDim: atoi(t, m["headdim"]),
					RopeTheta: theta, RopeScaling: m["scaling"], KeysPostRoPE: m["postrope"] == "1",
					BlockTokens: atoi(t, m["block"]), Tenant: m["tenant"],
				}
				if w, ok := m["window"]; ok {
					p.SlidingWindow = atoi(t, w)
				}
				ns, err := prefix.NewNamespace(p)
				if err != nil {
					t.Fatal(err)
				}
				if ns.String() != m["ns"] {
					t.Fatalf("namespace %s, spec says %s", ns, m["ns"])
				}
				keys := prefix.BlockKeys(ns, tokens(t, m["tokens"]), p.BlockTokens)
				for i, k := range keys {
					want, ok := m["key."+strconv.Itoa(i)]
					if !ok {
						t.Fatalf("spec lists no key.%d but %d blocks are full", i, len(keys))
					}
					if k.String() != want {
						t.Errorf("key %d = %s, spec says %s", i, k, want)
					}
				}
				if _, extra := m["key."+strconv.Itoa(len(keys))]; extra {
					t.Errorf("spec lists more keys than the %d full blocks", len(keys))
				}
			})
		case "chain":
			m := fields(t, line)
			parent, err := prefix.ParseKey(m["parent"])
			if err != nil {
				t.Fatal(err)
			}
			if got := prefix.Next(parent, tokens(t, m["tokens"])); got.String() != m["key"] {
				t.Errorf("chain(%s) = %s, spec says %s", m["tokens"], got, m["key"])
			}
		case "fold":
			m := fields(t, line)
			ns, err := prefix.ParseNamespace(m["ns"])
			if err != nil {
				t.Fatal(err)
			}
			tenant, err := url.PathUnescape(m["tenant"])
			if err != nil {
				t.Fatal(err)
			}
			if got := prefix.WithTenant(ns, tenant); got.String() != m["out"] {
				t.Errorf("fold(%s, %q) = %s, spec says %s", m["ns"][:8], tenant, got, m["out"])
			}
		default:
			t.Fatalf("unknown vector kind %q", line[0])
		}
	}
}
