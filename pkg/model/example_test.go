package model_test

import (
	"context"
	"fmt"
	"slices"

	"github.com/kvcache/kvcache/pkg/model"
)

// A worker reuses cached KV: it imports the blocks another sequence
// exported and prefills only the rest of the prompt. The logits are
// bit-identical to prefilling everything.
func ExampleSequence_ImportBlock() {
	m, err := model.Synthetic("tiny", model.TinyConfig(), 1)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	prompt := m.Tokenizer().Encode("a shared system prompt, then a question")
	const B = 16

	first := m.NewSequence(B)
	want, _ := first.Prefill(ctx, prompt)

	second := m.NewSequence(B)
	k := make([]float32, second.BlockLen())
	v := make([]float32, second.BlockLen())
	for i := 0; i < first.FullBlocks(); i++ {
		_ = first.ExportBlock(i, k, v) // in the worker: encode, put to the cache
		_ = second.ImportBlock(i, k, v)
	}
	cached := second.Len()
	got, _ := second.Prefill(ctx, prompt[cached:])
	fmt.Println("cached tokens:", cached, "of", len(prompt))
	fmt.Println("identical:", slices.Equal(got, want))
	// Output:
	// cached tokens: 32 of 39
	// identical: true
}
