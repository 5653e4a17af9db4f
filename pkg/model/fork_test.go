package model

import (
	"context"
	"slices"
	"testing"
)

// A fork continues exactly like the original and never changes it.
func TestForkIsIndependentAndIdentical(t *testing.T) {
	m, err := Synthetic("fork-test", TinyConfig(), 7)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prompt := []int{1, 72, 101, 108, 108, 111, 32, 119}
	seq := m.NewSequence(4)
	if _, err := seq.Prefill(ctx, prompt); err != nil {
		t.Fatal(err)
	}
	fork := seq.Fork()
	if fork.Len() != seq.Len() {
		t.Fatalf("fork has %d tokens, original %d", fork.Len(), seq.Len())
	}
	// The fork takes a different token first: the original must not see it.
	if _, err := fork.Decode(ctx, 33); err != nil {
		t.Fatal(err)
	}
	got, err := seq.Decode(ctx, 111)
	if err != nil {
		t.Fatal(err)
	}
	fresh := m.NewSequence(4)
	want, err := fresh.Prefill(ctx, append(slices.Clone(prompt), 111))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("the original's logits changed after its fork decoded")
	}
	// And the fork, given the same token, matches a fresh computation.
	fork2 := m.NewSequence(4)
	if _, err := fork2.Prefill(ctx, prompt); err != nil {
		t.Fatal(err)
	}
	f := fork2.Fork()
	a, err := f.Decode(ctx, 111)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a, want) {
		t.Fatal("a fork's logits differ from the original's for the same token")
	}
}
