package worker

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/model"
)

// embeddedModel is the worker's default model (model.Default), built once
// per test binary and shared with the benchmarks.
func embeddedModel(t testing.TB) *model.Model {
	t.Helper()
	defOnce.Do(func() { defModel = model.Default(nil) })
	return defModel
}

// TestEmbeddedModelPrintsText: what the embedded synthetic model
// generates, over HTTP, is printable UTF-8 words: no U+FFFD, no control
// characters, not one word repeated. Greedy and sampled, completions,
// chat and streaming.
func TestEmbeddedModelPrintsText(t *testing.T) {
	w := newWorker(t, Config{Model: embeddedModel(t)})
	url := server(t, w)
	tests := []struct {
		name, path, body string
		stream           bool
	}{
		{"greedy completion", "/v1/completions", `{"prompt":"You are a helpful assistant. Answer briefly and cite your sources.","max_tokens":12,"temperature":0}`, false},
		{"sampled completion", "/v1/completions", `{"prompt":"Write a poem about the sea.","max_tokens":12,"temperature":1,"seed":7}`, false},
		{"chat", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Héllo, wörld! 🙂 How are you?"}],"max_tokens":12,"temperature":0}`, false},
		{"stream", "/v1/completions", `{"prompt":"1 2 3","max_tokens":12,"temperature":0,"stream":true}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(url+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, %v: %s", resp.StatusCode, err, raw)
			}
			if bytes.Contains(raw, []byte(`\ufffd`)) || bytes.Contains(raw, []byte(`\u00`)) {
				t.Fatalf("answer escapes U+FFFD or a control character: %s", raw)
			}
			var text string
			if tc.stream {
				for _, line := range strings.Split(string(raw), "\n") {
					data, ok := strings.CutPrefix(line, "data: ")
					if !ok || data == "[DONE]" {
						continue
					}
					text += choiceText(t, []byte(data))
				}
			} else {
				text = choiceText(t, raw)
			}
			if !utf8.ValidString(text) || strings.ContainsRune(text, utf8.RuneError) {
				t.Fatalf("text %q is not valid UTF-8 without U+FFFD", text)
			}
			if i := strings.IndexFunc(text, func(r rune) bool { return !unicode.IsPrint(r) }); i >= 0 {
				t.Fatalf("text %q has a non-printable character at byte %d", text, i)
			}
			words := map[string]bool{}
			for _, f := range strings.Fields(text) {
				words[f] = true
			}
			if len(words) < 4 {
				t.Fatalf("text %q has %d distinct words, want printable words", text, len(words))
			}
			t.Logf("%s: %q", tc.name, text)
		})
	}
}

// choiceText returns the text of choice 0 of a completion, chat
// completion or stream chunk.
func choiceText(t *testing.T, raw []byte) string {
	t.Helper()
	var ans struct {
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil {
		t.Fatalf("answer %q: %v", raw, err)
	}
	if len(ans.Choices) == 0 {
		return ""
	}
	c := ans.Choices[0]
	return c.Text + c.Message.Content + c.Delta.Content
}
