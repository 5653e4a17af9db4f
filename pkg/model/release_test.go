package model

import "testing"

// TestReleaseReuse checks that a sequence built on a released sequence's
// KV buffers computes bit-identical logits to a fresh one, for a prompt
// different from (and shorter than) the one the buffers last held, both
// when prefilled and when imported from exported blocks, and that the
// model keeps at most kvPoolMax buffer sets.
func TestReleaseReuse(t *testing.T) {
	m := tinyModel(t, nil)
	const bt = 4
	old := m.NewSequence(bt)
	old.Reserve(64)
	prefill(t, old, prompt(60))
	buf := &old.k[0][:1][0]
	old.Release()
	if old.Len() != 0 {
		t.Fatalf("released sequence has length %d", old.Len())
	}

	toks := make([]int, 33)
	for i := range toks {
		toks[i] = (i*53 + 7) % 256
	}
	want := prefill(t, m.NewSequence(bt), toks)

	tests := []struct {
		name string
		imp  bool
	}{{"prefill", false}, {"import", true}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := m.NewSequence(bt)
			prefill(t, src, toks[:32])
			s := m.NewSequence(bt)
			s.Reserve(len(toks))
			if &s.k[0][:1][0] != buf {
				t.Fatal("Reserve did not reuse the released buffers")
			}
			if tc.imp {
				k, v := make([]float32, s.BlockLen()), make([]float32, s.BlockLen())
				for i := range 32 / bt {
					if err := src.ExportBlock(i, k, v); err != nil {
						t.Fatal(err)
					}
					if err := s.ImportBlock(i, k, v); err != nil {
						t.Fatal(err)
					}
				}
				if i, ok := sameBits(prefill(t, s, toks[32:]), want); !ok {
					t.Fatalf("logit %d differs from a fresh sequence's", i)
				}
			} else if i, ok := sameBits(prefill(t, s, toks), want); !ok {
				t.Fatalf("logit %d differs from a fresh sequence's", i)
			}
			s.Release()
		})
	}

	for range kvPoolMax + 2 {
		s := m.NewSequence(bt)
		prefill(t, s, prompt(8))
		s.Release()
	}
	if n := len(m.kvFree.sets); n > kvPoolMax {
		t.Fatalf("pool keeps %d sets, bound %d", n, kvPoolMax)
	}
	// The largest buffers are the ones kept.
	s := m.NewSequence(bt)
	s.Reserve(64)
	if &s.k[0][:1][0] != buf {
		t.Fatal("the largest released buffers were not kept")
	}
}
