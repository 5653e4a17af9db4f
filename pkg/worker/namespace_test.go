package worker

import (
	"testing"

	"github.com/kvcache/kvcache/pkg/model"
)

// TestNamespaceRecordsWindow: two models with identical weights that differ
// only in their sliding attention window compute different KV past the
// window, so they must not share a namespace; a window covering the whole
// context is full attention and keeps the full-attention namespace.
func TestNamespaceRecordsWindow(t *testing.T) {
	ns := func(window int) string {
		t.Helper()
		cfg := model.TinyConfig()
		cfg.SlidingWindow = window
		m, err := model.Synthetic("tiny", cfg, 7)
		if err != nil {
			t.Fatal(err)
		}
		n, err := Namespace(m.Info(), 16, "")
		if err != nil {
			t.Fatal(err)
		}
		return n.String()
	}
	full, w64, w128, wide := ns(0), ns(64), ns(128), ns(model.TinyConfig().ContextLen)
	if full == w64 || full == w128 || w64 == w128 {
		t.Fatalf("windows share a namespace: full %s, 64 %s, 128 %s", full, w64, w128)
	}
	if wide != full {
		t.Fatalf("window = context gives %s, full attention %s", wide, full)
	}
}
