package model

import (
	"context"
	"math"
	"testing"
)

// Reserve changes no result and caps at the context: a sequence reserved
// for a prompt prefills it to the same bits, without growing its KV
// slices again, and a reservation past the context holds no more.
func TestReserve(t *testing.T) {
	m := tinyModel(t, nil)
	prompt := make([]int, 40)
	for i := range prompt {
		prompt[i] = (i*7 + 3) % m.cfg.Vocab
	}
	ctx := context.Background()
	plain := m.NewSequence(8)
	want, err := plain.Prefill(ctx, prompt)
	if err != nil {
		t.Fatal(err)
	}
	for _, tokens := range []int{len(prompt), 10 * m.cfg.ContextLen, 0, -5} {
		s := m.NewSequence(8)
		s.Reserve(tokens)
		kd := m.cfg.KVDim()
		if c, limit := cap(s.k[0]), min(max(tokens, 0), m.cfg.ContextLen)*kd; c < limit || c > limit+kd*8 && tokens > 0 {
			t.Fatalf("Reserve(%d): cap %d, want about %d", tokens, c, limit)
		}
		before := cap(s.k[0])
		got, err := s.Prefill(ctx, prompt)
		if err != nil {
			t.Fatal(err)
		}
		if tokens >= len(prompt) && cap(s.k[0]) != before {
			t.Errorf("Reserve(%d): prefill regrew the KV from %d to %d", tokens, before, cap(s.k[0]))
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("Reserve(%d): logit %d = %v, want %v", tokens, i, got[i], want[i])
			}
		}
	}
}
