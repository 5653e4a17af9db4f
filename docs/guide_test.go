package docs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/internal/kvctl"
)

// The guide states exact numbers three ways, all checked here against the
// code rather than a copy: transcripts of `kvctl size` (a fenced block
// whose first line is "$ kvctl size ..." holds the command's exact
// output), the table of model shapes (the formula's bytes per token), and
// the table of codecs (each codec's bytes per token, as kvctl prints it).

const guide = "kv-cache.md"

func readGuide(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(guide)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func kvctlOut(t *testing.T, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := kvctl.Main(context.Background(), &kvctl.Env{Stdout: &out, Stderr: &errb}, args); err != nil {
		t.Fatalf("kvctl %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// transcripts returns each "$ kvctl size ..." fenced block: the arguments
// and the output lines below the command.
func transcripts(lines []string) (args [][]string, outs []string) {
	for i := 0; i < len(lines); i++ {
		if lines[i] != "```console" || i+1 >= len(lines) || !strings.HasPrefix(lines[i+1], "$ kvctl size") {
			continue
		}
		cmd := strings.Fields(strings.TrimPrefix(lines[i+1], "$ kvctl "))
		var out []string
		j := i + 2
		for ; j < len(lines) && lines[j] != "```"; j++ {
			out = append(out, lines[j])
		}
		args, outs = append(args, cmd), append(outs, strings.Join(out, "\n"))
		i = j
	}
	return args, outs
}

func TestGuideKVCtlTranscripts(t *testing.T) {
	args, outs := transcripts(readGuide(t))
	if len(args) < 3 {
		t.Fatalf("%s has %d kvctl size transcripts, want the three model shapes at least", guide, len(args))
	}
	for i, a := range args {
		t.Run(strings.Join(a, " "), func(t *testing.T) {
			got := strings.TrimRight(kvctlOut(t, a...), "\n")
			if got != outs[i] {
				t.Errorf("the guide says:\n%s\n\nkvctl %s prints:\n%s", outs[i], strings.Join(a, " "), got)
			}
		})
	}
}

// table returns the rows of the markdown table whose header starts with
// first, as cells keyed by header.
func table(t *testing.T, lines []string, first string) []map[string]string {
	t.Helper()
	cells := func(l string) []string {
		f := strings.Split(strings.Trim(strings.TrimSpace(l), "|"), "|")
		for i := range f {
			f[i] = strings.TrimSpace(strings.ReplaceAll(f[i], "`", ""))
		}
		return f
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, "| "+first+" |") {
			continue
		}
		head := cells(l)
		var rows []map[string]string
		for _, r := range lines[i+2:] {
			if !strings.HasPrefix(r, "|") {
				break
			}
			c := cells(r)
			if len(c) != len(head) {
				t.Fatalf("row %q has %d cells, header %d", r, len(c), len(head))
			}
			m := map[string]string{}
			for k, h := range head {
				m[h] = c[k]
			}
			rows = append(rows, m)
		}
		return rows
	}
	t.Fatalf("%s has no table starting %q", guide, first)
	return nil
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

type sizeJSON struct {
	Layers int `json:"kv_layers"`
	Codecs []struct {
		Codec         string  `json:"codec"`
		BytesPerToken float64 `json:"bytes_per_token"`
		TotalBytes    float64 `json:"total_bytes"`
	} `json:"codecs"`
}

func kvctlSize(t *testing.T, args ...string) sizeJSON {
	t.Helper()
	var s sizeJSON
	if err := json.Unmarshal([]byte(kvctlOut(t, append([]string{"size", "-o", "json"}, args...)...)), &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The shapes table: 2 (K and V) x KV layers x kv heads x head dim x 2
// bytes of f16, which kvctl's f16 figure is plus the block header spread
// over the block's tokens.
func TestGuideShapesTable(t *testing.T) {
	rows := table(t, readGuide(t), "model shape")
	if len(rows) < 3 {
		t.Fatalf("shapes table has %d rows, want 3", len(rows))
	}
	for _, r := range rows {
		t.Run(r["model shape"], func(t *testing.T) {
			kvLayers, heads, dim := atoi(t, r["KV layers"]), atoi(t, r["kv heads"]), atoi(t, r["head dim"])
			perToken := atoi(t, r["f16 bytes/token"])
			if want := 2 * kvLayers * heads * dim * 2; perToken != want {
				t.Errorf("f16 bytes/token %d, formula gives %d", perToken, want)
			}
			if got, want := r["at 4096 tokens"], strconv.Itoa(perToken*4096>>20)+" MiB"; got != want {
				t.Errorf("at 4096 tokens %q, want %q", got, want)
			}
			args := strings.Fields(r["kvctl size"])
			s := kvctlSize(t, args...)
			if s.Layers != kvLayers {
				t.Errorf("kvctl size %v: %d KV layers, table %d", args, s.Layers, kvLayers)
			}
			f16 := s.Codecs[0]
			// The header is well under 1 KiB, spread over 16 tokens.
			if f16.Codec != "f16" || f16.BytesPerToken < float64(perToken) || f16.BytesPerToken > float64(perToken)+64 {
				t.Errorf("kvctl size %v: %s %v bytes/token, formula %d", args, f16.Codec, f16.BytesPerToken, perToken)
			}
		})
	}
}

// The codecs table: bytes per token of Llama-3-8B at the workers'
// default 16-token blocks, exactly as kvctl size prints them.
func TestGuideCodecTable(t *testing.T) {
	rows := table(t, readGuide(t), "codec")
	s := kvctlSize(t, "--layers", "32", "--kv-heads", "8", "--head-dim", "128")
	want := map[string]int{}
	for _, c := range s.Codecs {
		want[c.Codec] = int(c.BytesPerToken)
	}
	if len(rows) != len(want) {
		t.Errorf("codec table has %d rows, kvctl knows %d codecs", len(rows), len(want))
	}
	for _, r := range rows {
		w, ok := want[r["codec"]]
		if !ok {
			t.Errorf("codec %q is not one kvctl knows", r["codec"])
			continue
		}
		if got := atoi(t, r["bytes/token (Llama-3-8B)"]); got != w {
			t.Errorf("%s: guide says %d bytes/token, kvctl size %d", r["codec"], got, w)
		}
	}
}
