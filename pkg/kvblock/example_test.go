package kvblock_test

import (
	"fmt"

	"github.com/kvcache/kvcache/pkg/kvblock"
)

func Example() {
	s := kvblock.Shape{Tokens: 2, Layers: 1, KVHeads: 1, HeadDim: 4}
	kv := &kvblock.KV{Shape: s,
		K: []float32{0.5, -1, 2, 4, 1, 2, 3, 4},
		V: []float32{1, 1, 1, 1, -8, 4, 2, 1},
	}
	// Block 5 of a sequence (positions 10 and 11): no sink tokens.
	blk, err := kvblock.Encode(nil, kv, kvblock.Meta{Codec: kvblock.Int8, StartPos: 10, Sinks: -1})
	if err != nil {
		panic(err)
	}
	var out kvblock.KV
	h, err := kvblock.Decode(blk, &out)
	if err != nil {
		panic(err)
	}
	fmt.Println(h.Codec, h.Shape.Tokens, len(blk), kvblock.EncodedSize(kvblock.Int8, s, 0))
	fmt.Printf("%.3f\n%.3f\n", out.K, out.V)
	// Output:
	// int8 2 88 88
	// [0.504 -1.009 1.986 4.004 1.009 1.986 2.995 4.004]
	// [1.001 1.001 1.001 1.001 -8.007 3.972 2.018 1.009]
}
