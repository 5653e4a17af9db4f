package client_test

import (
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func tempDir() (string, error) { return os.MkdirTemp("", "kvcache-example-") }

// encodeChain encodes kvs[i] as block i of one token sequence (token ids
// salt*1000 + position), f16, keyed and parent-linked as a worker links
// them.
func encodeChain(tb testing.TB, ns prefix.Namespace, salt uint32, kvs []*kvblock.KV) []client.Block {
	tb.Helper()
	out := make([]client.Block, 0, len(kvs))
	parent := ns.Root()
	for i, kv := range kvs {
		t := kv.Shape.Tokens
		toks := make([]uint32, t)
		for j := range toks {
			toks[j] = salt*1000 + uint32(i*t+j)
		}
		key := prefix.Next(parent, toks)
		m := kvblock.Meta{Codec: kvblock.F16, StartPos: uint32(i * t), RoPE: true, Sinks: -1}
		if i > 0 {
			m.Parent, m.HasParent = parent, true
		}
		data, err := kvblock.Encode(nil, kv, m)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, client.Block{Key: key, Data: data})
		parent = key
	}
	return out
}
