package prefix_test

import (
	"errors"
	"testing"

	"github.com/kvcache/kvcache/pkg/prefix"
)

func baseParams() prefix.Params {
	return prefix.Params{Model: "m", Layers: 2, KVHeads: 2, HeadDim: 8, RopeTheta: 10000, KeysPostRoPE: true, BlockTokens: 4}
}

func TestNamespaceSeparatesEveryField(t *testing.T) {
	base, err := prefix.NewNamespace(baseParams())
	if err != nil {
		t.Fatal(err)
	}
	mutations := map[string]func(*prefix.Params){
		"model":    func(p *prefix.Params) { p.Model = "m2" },
		"weights":  func(p *prefix.Params) { p.WeightsDigest = "x" },
		"layers":   func(p *prefix.Params) { p.Layers = 3 },
		"kvheads":  func(p *prefix.Params) { p.KVHeads = 1 },
		"headdim":  func(p *prefix.Params) { p.HeadDim = 16 },
		"theta":    func(p *prefix.Params) { p.RopeTheta = 500000 },
		"scaling":  func(p *prefix.Params) { p.RopeScaling = "linear:2" },
		"postrope": func(p *prefix.Params) { p.KeysPostRoPE = false },
		"block":    func(p *prefix.Params) { p.BlockTokens = 8 },
		"tenant":   func(p *prefix.Params) { p.Tenant = "t" },
		// Length prefixes keep adjacent strings from sliding into each other.
		"boundary": func(p *prefix.Params) { p.Model = "mx"; p.WeightsDigest = "" },
	}
	seen := map[prefix.Namespace]string{base: "base"}
	for name, mut := range mutations {
		p := baseParams()
		mut(&p)
		ns, err := prefix.NewNamespace(p)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := seen[ns]; dup {
			t.Errorf("%s collides with %s", name, other)
		}
		seen[ns] = name
	}
}

func TestNamespaceRejectsInvalid(t *testing.T) {
	for name, mut := range map[string]func(*prefix.Params){
		"no model":  func(p *prefix.Params) { p.Model = "" },
		"no layers": func(p *prefix.Params) { p.Layers = 0 },
		"no block":  func(p *prefix.Params) { p.BlockTokens = 0 },
	} {
		p := baseParams()
		mut(&p)
		if _, err := prefix.NewNamespace(p); !errors.Is(err, prefix.ErrParams) {
			t.Errorf("%s: err = %v, want ErrParams", name, err)
		}
	}
}

func TestBlockKeysChain(t *testing.T) {
	ns, _ := prefix.NewNamespace(baseParams())
	a := []uint32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	b := []uint32{1, 2, 3, 4, 5, 6, 7, 0, 9}
	ka, kb := prefix.BlockKeys(ns, a, 4), prefix.BlockKeys(ns, b, 4)
	if len(ka) != 2 {
		t.Fatalf("%d keys for 9 tokens in blocks of 4, want 2 (partial block unkeyed)", len(ka))
	}
	if ka[0] != kb[0] {
		t.Error("equal first blocks must share a key")
	}
	if ka[1] == kb[1] {
		t.Error("different second blocks must differ")
	}
	// A block's key depends on its whole prefix, not only its own tokens.
	c := []uint32{0, 2, 3, 4, 5, 6, 7, 8}
	if kc := prefix.BlockKeys(ns, c, 4); kc[1] == ka[1] {
		t.Error("same block tokens after a different prefix must differ")
	}
	if prefix.Next(ns.Root(), a[:4]) != ka[0] {
		t.Error("Next from the root disagrees with BlockKeys")
	}
}

func TestParseRoundTrip(t *testing.T) {
	ns, _ := prefix.NewNamespace(baseParams())
	got, err := prefix.ParseNamespace(ns.String())
	if err != nil || got != ns {
		t.Fatalf("ParseNamespace = %v, %v", got, err)
	}
	for _, bad := range []string{"", "zz", "abcd"} {
		if _, err := prefix.ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) succeeded", bad)
		}
	}
	if _, err := prefix.KeyFromBytes(make([]byte, 31)); !errors.Is(err, prefix.ErrLength) {
		t.Errorf("31 bytes: %v", err)
	}
	if prefix.WithTenant(ns, "") != ns || prefix.WithTenant(ns, "a") == ns || prefix.WithTenant(ns, "a") == prefix.WithTenant(ns, "b") {
		t.Error("WithTenant must keep the empty tenant and separate others")
	}
}
