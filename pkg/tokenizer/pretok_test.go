package tokenizer

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// TestPreRulesAgainstPythonRegex checks every rule set's splits of the
// llama.cpp inputs (and a few more) against Python's regex module, an
// independent backtracking engine (testdata/pretok/gen.py).
func TestPreRulesAgainstPythonRegex(t *testing.T) {
	raw, err := os.ReadFile("testdata/pretok/splits.json")
	if err != nil {
		t.Fatal(err)
	}
	var ref struct {
		Texts  []string              `json:"texts"`
		Splits map[string][][]string `json:"splits"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	if len(ref.Splits) != len(preRules) {
		t.Errorf("reference has %d rule sets, pretok.go %d: regenerate", len(ref.Splits), len(preRules))
	}
	for name := range preRules {
		want, ok := ref.Splits[name]
		if !ok {
			t.Errorf("%s: no reference splits", name)
			continue
		}
		p := &preTokenizer{name: name, res: compiled[name]}
		pass := 0
		for i, text := range ref.Texts {
			got := p.split(text)
			if len(got) == 0 && len(want[i]) == 0 || reflect.DeepEqual(got, want[i]) {
				pass++
				continue
			}
			t.Errorf("%s split(%q)\n got  %q\n want %q", name, text, got, want[i])
		}
		t.Logf("%s: %d/%d splits equal", name, pass, len(ref.Texts))
	}
}

// TestDumpPreRules writes the rule sets for gen.py (KVCACHE_DUMP_RULES=1).
func TestDumpPreRules(t *testing.T) {
	if os.Getenv("KVCACHE_DUMP_RULES") == "" {
		t.Skip("set KVCACHE_DUMP_RULES=1 to write /tmp/rules.json")
	}
	b, err := json.Marshal(preRules)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("/tmp/rules.json", b, 0o644); err != nil {
		t.Fatal(err)
	}
}
