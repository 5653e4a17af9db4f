package worker

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
