package model

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// TestQwen2GGUF checks that a qwen2 file is read from qwen2.* keys with its
// bias tensors, and that a missing bias is an error naming it.
func TestQwen2GGUF(t *testing.T) {
	m := tinyModel(t, func(c *Config) { c.Arch = ArchQwen2; c.SlidingWindow = 9 })
	path := writeModel(t, m, gguf.F32, m.tensors())
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]uint64{"qwen2.block_count": 2, "qwen2.attention.sliding_window": 9} {
		if v, err := f.Uint(key); err != nil || v != want {
			t.Errorf("%s = %d, %v; want %d", key, v, err, want)
		}
	}
	f.Close()
	got, err := Load(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if c := got.Config(); c.Arch != ArchQwen2 || c.SlidingWindow != 9 || got.layers[1].bv == nil {
		t.Fatalf("loaded config %+v, layer 1 v bias %v", c, got.layers[1].bv)
	}
	var noBias []namedTensor
	for _, nt := range m.tensors() {
		if nt.name != "blk.1.attn_k.bias" {
			noBias = append(noBias, nt)
		}
	}
	_, err = Load(context.Background(), writeModel(t, m, gguf.F32, noBias))
	if !errors.Is(err, ErrBadWeights) || !strings.Contains(err.Error(), "blk.1.attn_k.bias") {
		t.Fatalf("missing bias: err = %v", err)
	}
}

func TestArchConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		mut  func(*Config)
	}{
		{"unknown arch", func(c *Config) { c.Arch = "gemma" }},
		{"negative window", func(c *Config) { c.SlidingWindow = -1 }},
	} {
		c := TinyConfig()
		tc.mut(&c)
		if err := c.Validate(); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%s: Validate = %v", tc.name, err)
		}
	}
	// A window covering the whole context is full attention: same logits,
	// and Info (hence the namespace) does not tell them apart.
	full := tinyModel(t, nil)
	wide := tinyModel(t, func(c *Config) { c.SlidingWindow = c.ContextLen })
	narrow := tinyModel(t, func(c *Config) { c.SlidingWindow = 8 })
	toks := prompt(30)
	a, b := prefill(t, full.NewSequence(8), toks), prefill(t, wide.NewSequence(8), toks)
	if i, ok := sameBits(a, b); !ok {
		t.Fatalf("window = context changes logit %d", i)
	}
	if full.Info() != wide.Info() {
		t.Fatalf("info differs: %+v vs %+v", full.Info(), wide.Info())
	}
	if n := narrow.Info(); n.SlidingWindow != 8 || n.Arch != ArchLlama {
		t.Fatalf("narrow info %+v", n)
	}
	if _, ok := sameBits(a, prefill(t, narrow.NewSequence(8), toks)); ok {
		t.Fatal("a window of 8 over 30 tokens did not change the logits")
	}
}
