package kvblock

import (
	"bufio"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/prefix"
)

// vectors are the inputs of the test vectors in docs/block-format.md. The
// test re-encodes them and compares with the hex in the document, so the
// spec and the implementation cannot drift apart.
func vectors() map[string]struct {
	kv *KV
	m  Meta
} {
	var parent prefix.Key
	for i := range parent {
		parent[i] = byte(i)
	}
	return map[string]struct {
		kv *KV
		m  Meta
	}{
		"int8": {
			kv: &KV{Shape: Shape{Tokens: 2, Layers: 1, KVHeads: 1, HeadDim: 4},
				K: []float32{8, -1, 0.5, 2, 1, -2, 3, -4},
				V: []float32{0.25, 0.5, -0.75, 1, 10, 20, -30, 40}},
			m: Meta{Codec: Int8, StartPos: 0, RoPE: true, Parent: parent, HasParent: true, Sinks: 1},
		},
		"int4": {
			kv: &KV{Shape: Shape{Tokens: 3, Layers: 1, KVHeads: 1, HeadDim: 4},
				K: []float32{0, 1, 2, 3, 4, 5, 6, 7, -1, -2, 8, 9},
				V: []float32{1, 2, 3, 4, -1, 0, 1, 2, 0.5, 0.5, 0.5, 0.5}},
			m: Meta{Codec: Int4, StartPos: 64, Sinks: -1},
		},
		"f16": {
			kv: &KV{Shape: Shape{Tokens: 1, Layers: 1, KVHeads: 1, HeadDim: 2},
				K: []float32{1, -2}, V: []float32{0.5, 65504}},
			m: Meta{Codec: F16, StartPos: 7, Sinks: -1},
		},
	}
}

// docVectors reads blocks introduced by "<!-- vector NAME -->" followed by a
// fenced block of hex (whitespace ignored).
func docVectors(t *testing.T) map[string][]byte {
	f, err := os.Open("../../docs/block-format.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]byte{}
	sc := bufio.NewScanner(f)
	name, inFence := "", false
	var sb strings.Builder
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "<!-- vector "):
			name = strings.TrimSuffix(strings.TrimPrefix(line, "<!-- vector "), " -->")
		case name != "" && strings.HasPrefix(line, "```") && !inFence:
			inFence = true
			sb.Reset()
		case inFence && strings.HasPrefix(line, "```"):
			b, err := hex.DecodeString(strings.Join(strings.Fields(sb.String()), ""))
			if err != nil {
				t.Fatalf("vector %s: %v", name, err)
			}
			out[name] = b
			name, inFence = "", false
		case inFence:
			if i := strings.Index(line, "#"); i >= 0 {
				line = line[:i]
			}
			sb.WriteString(line)
		}
	}
	return out
}

func TestDocVectors(t *testing.T) {
	doc := docVectors(t)
	for name, v := range vectors() {
		got, err := Encode(nil, v.kv, v.m)
		if err != nil {
			t.Fatal(err)
		}
		want, ok := doc[name]
		if !ok {
			t.Errorf("vector %s missing from docs/block-format.md; it encodes to:\n%s", name, hex.Dump(got))
			continue
		}
		if string(got) != string(want) {
			t.Errorf("vector %s differs from the spec:\ngot\n%s\nwant\n%s", name, hex.Dump(got), hex.Dump(want))
		}
		if _, err := Inspect(want); err != nil {
			t.Errorf("vector %s: %v", name, err)
		}
	}
}
