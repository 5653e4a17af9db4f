package worker

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvcache/kvcache/internal/cachenode"
	"github.com/kvcache/kvcache/internal/testnode"
	"github.com/kvcache/kvcache/pkg/auth/authtest"
	"github.com/kvcache/kvcache/pkg/client"
	"github.com/kvcache/kvcache/pkg/kvblock"
	"github.com/kvcache/kvcache/pkg/prefix"
)

const (
	keyA1 = "sk-tenant-a-one-0123456789"
	keyA2 = "sk-tenant-a-two-0123456789"
	keyB  = "sk-tenant-b-0123456789abcd"
)

// postAuth is post with an Authorization header (key "" sends none).
func postAuth(t *testing.T, url, key, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, bytes.NewBufferString(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("answer %d is not JSON: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

// TestCacheSaltAndAPIKeyTenantsIsolate: one worker, one node. The same
// prompt is a hit only for the same (API-key tenant, cache_salt); a
// missing or wrong key is a 401 with an OpenAI error object.
func TestCacheSaltAndAPIKeyTenantsIsolate(t *testing.T) {
	_, c := startNode(t)
	w := newWorker(t, Config{Cache: c})
	kf := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(kf, []byte("# key tenant\n"+keyA1+" A\n"+keyA2+" A\n"+keyB+" B\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys, err := LoadAPIKeys(kf)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewServer(RequireAPIKeys(keys, w.Handler()))
	t.Cleanup(s.Close)
	url := s.URL + "/v1/completions"
	prompt := strings.Repeat("The shared system prompt of one application. ", 5)
	body := func(salt string) string {
		m := map[string]any{"prompt": prompt, "max_tokens": 1, "temperature": 0}
		if salt != "" {
			m["cache_salt"] = salt
		}
		return jsonString(m)
	}

	for _, tc := range []struct{ name, key, msg string }{
		{"no key", "", "didn't provide"},
		{"wrong key", "sk-not-a-key-0123456789", "Incorrect API key"},
	} {
		code, m := postAuth(t, url, tc.key, body(""))
		e, _ := m["error"].(map[string]any)
		if code != http.StatusUnauthorized || e["code"] != "invalid_api_key" || e["type"] != "invalid_request_error" || !strings.Contains(e["message"].(string), tc.msg) {
			t.Errorf("%s: %d %v; want 401 with an OpenAI error object", tc.name, code, m)
		}
	}
	if resp, err := http.Get(s.URL + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("healthz needs no key: %v %v", resp, err)
	}

	// Seed: tenant A, salt u1.
	if code, m := postAuth(t, url, keyA1, body("u1")); code != 200 || cachedTokens(t, m) != 0 {
		t.Fatalf("seed: %d %v", code, m)
	}
	flush(t, w)
	for _, tc := range []struct {
		name, key, salt string
		hit             bool
	}{
		{"same tenant, same salt, other key", keyA2, "u1", true},
		{"same tenant, other salt", keyA1, "u2", false},
		{"same tenant, no salt", keyA1, "", false},
		{"other tenant, same salt", keyB, "u1", false},
	} {
		code, m := postAuth(t, url, tc.key, body(tc.salt))
		if code != 200 {
			t.Fatalf("%s: %d %v", tc.name, code, m)
		}
		if got := cachedTokens(t, m); (got > 0) != tc.hit {
			t.Errorf("%s: cached_tokens %d, want hit=%v", tc.name, got, tc.hit)
		}
	}
	for _, bad := range []string{`""`, `42`, `"` + strings.Repeat("x", MaxCacheSaltBytes+1) + `"`} {
		code, m := postAuth(t, url, keyA1, `{"prompt":"hi","cache_salt":`+bad+`}`)
		e, _ := m["error"].(map[string]any)
		if code != 400 || e["param"] != "cache_salt" {
			t.Errorf("cache_salt %.20s: %d %v; want 400 naming cache_salt", bad, code, m)
		}
	}
}

func TestAPIKeysFileErrors(t *testing.T) {
	for _, content := range []string{"short A\n", keyA1 + "\n", keyA1 + " A\n" + keyA1 + " B\n"} {
		p := filepath.Join(t.TempDir(), "keys")
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadAPIKeys(p); err == nil {
			t.Errorf("%q accepted", content)
		}
	}
}

// TestForgedBlocksNeverReachAnotherTenant runs issue 9's poisoning attack
// end to end over TLS: an attacker puts valid-looking blocks of garbage KV
// under the keys of a prompt the victim is about to send. Attacker in the
// victim's tenant (the "before" state: everyone shares): the victim's
// worker restores the forged prefix. Attacker in its own tenant: the
// victim's worker computes everything and answers exactly what a worker
// without a cache answers.
func TestForgedBlocksNeverReachAnotherTenant(t *testing.T) {
	const (
		tokVictim   = "victim-token-0123456789abcdef"
		tokAttacker = "attacker-token-0123456789abcd"
		tokInsider  = "insider-token-0123456789abcde"
	)
	ca := authtest.NewCA(t, "worker test CA")
	srv := ca.Server(t)
	tf := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(tf, []byte(tokVictim+" victim write\n"+tokAttacker+" attacker write\n"+tokInsider+" victim write\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	node := testnode.Start(t, cachenode.Config{NoSync: true, DataListen: "127.0.0.1:0",
		Security: cachenode.Security{TLSCert: srv.CertFile, TLSKey: srv.KeyFile, AuthTokens: tf}})
	tlsCfg := &tls.Config{RootCAs: ca.Pool()}
	secureClient := func(token string) *client.Client {
		c, err := client.New(client.Config{Nodes: []string{node.Addr()}, TLS: tlsCfg, Token: token, Logger: quietLogger(), CallTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	plain := newWorker(t, Config{})
	forge := func(c *client.Client, w *Worker, prompt []int) int {
		t.Helper()
		info := w.Info()
		b := w.BlockTokens()
		keys := prefix.BlockKeys(w.ns, toU32(prompt[:(len(prompt)-1)/b*b]), b)
		var blocks []client.Block
		rng := uint32(12345)
		for i, k := range keys {
			n := b * info.KVLayers * info.KVHeads * info.HeadDim
			kv := &kvblock.KV{Shape: kvblock.Shape{Tokens: b, Layers: info.KVLayers, KVHeads: info.KVHeads, HeadDim: info.HeadDim},
				K: make([]float32, n), V: make([]float32, n)}
			for j := range kv.K {
				rng = rng*1664525 + 1013904223
				kv.K[j] = float32(int32(rng>>8)%2000) / 100
				kv.V[j] = -kv.K[j]
			}
			m := kvblock.Meta{Codec: kvblock.F16, RoPE: info.KeysPostRoPE, StartPos: uint32(i * b), Sinks: -1}
			if i > 0 {
				m.Parent, m.HasParent = keys[i-1], true
			}
			enc, err := kvblock.Encode(nil, kv, m)
			if err != nil {
				t.Fatal(err)
			}
			blocks = append(blocks, client.Block{Key: k, Data: enc})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.Put(ctx, w.ns, blocks); err != nil {
			t.Fatalf("forged put: %v", err)
		}
		return len(blocks)
	}
	for i, tc := range []struct {
		name     string
		attacker string
		poisoned bool
	}{
		{"attacker in its own tenant", tokAttacker, false},
		{"attacker inside the victim's tenant", tokInsider, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prompt := textPrompt(7+i, 6*DefaultBlockTokens+5)
			want, _ := run(t, plain, Request{Prompt: prompt, MaxTokens: 8})
			attackerW := newWorker(t, Config{})
			forged := forge(secureClient(tc.attacker), attackerW, prompt)
			victim := newWorker(t, Config{Cache: secureClient(tokVictim)})
			got, _ := run(t, victim, Request{Prompt: prompt, MaxTokens: 8})
			same := slices.Equal(got.Tokens, want.Tokens)
			t.Logf("%d forged blocks; victim cached_tokens %d of %d, completion equals the uncached one: %v",
				forged, got.CachedTokens, len(prompt), same)
			if tc.poisoned {
				if got.CachedTokens == 0 || same {
					t.Fatalf("the insider's forged blocks were not restored (cached %d, same completion %v): the attack did not run", got.CachedTokens, same)
				}
				return
			}
			if got.CachedTokens != 0 || !same {
				t.Fatalf("forged blocks reached the victim: cached %d, tokens %v, want 0 and %v", got.CachedTokens, got.Tokens, want.Tokens)
			}
			flush(t, victim)
			// The victim's own blocks are stored and then hit.
			again, _ := run(t, victim, Request{Prompt: prompt, MaxTokens: 8})
			if again.CachedTokens == 0 || !slices.Equal(again.Tokens, want.Tokens) {
				t.Fatalf("victim's own cache over TLS+token: cached %d, tokens %v", again.CachedTokens, again.Tokens)
			}
		})
	}
}
