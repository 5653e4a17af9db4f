package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
)

// The official OpenAI Go SDK against the real HTTP server: every API field
// the worker supports, as a client written for OpenAI sends and reads it.
// Each subtest logs its request and an excerpt of the answer (go test -v
// prints the transcript).

func sdkClient(t *testing.T) (openai.Client, *Worker) {
	t.Helper()
	w := newWorker(t, Config{})
	return openai.NewClient(option.WithBaseURL(server(t, w)+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0)), w
}

func logJSON(t *testing.T, what string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	t.Logf("%s %s", what, s)
}

func TestSDKCompletions(t *testing.T) {
	c, w := sdkClient(t)
	ctx := context.Background()
	prompt := openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")}
	base := openai.CompletionNewParams{Model: openai.CompletionNewParamsModel(w.ModelID()), Prompt: prompt, MaxTokens: openai.Int(24), Temperature: openai.Float(0)}
	logJSON(t, "request", base)
	full, err := c.Completions.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	logJSON(t, "response", full)
	text := full.Choices[0].Text
	if full.Choices[0].FinishReason != "length" || full.Usage.CompletionTokens != 24 || full.Object != "text_completion" {
		t.Fatalf("answer %+v", full)
	}

	t.Run("stop", func(t *testing.T) {
		at := asciiRun(text, 3, 2)
		if at < 0 {
			t.Fatalf("no stop candidate in %q", text)
		}
		p := base
		p.Stop = openai.CompletionNewParamsStopUnion{OfStringArray: []string{text[at : at+2]}}
		logJSON(t, "request", p)
		r, err := c.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		logJSON(t, "response", r.Choices)
		if want := text[:strings.Index(text, text[at:at+2])]; r.Choices[0].Text != want || r.Choices[0].FinishReason != "stop" {
			t.Errorf("text %q (%s), want %q (stop)", r.Choices[0].Text, r.Choices[0].FinishReason, want)
		}
	})
	t.Run("logprobs", func(t *testing.T) {
		p := base
		p.MaxTokens, p.Logprobs = openai.Int(4), openai.Int(2)
		logJSON(t, "request", p)
		r, err := c.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		lp := r.Choices[0].Logprobs
		logJSON(t, "response logprobs", lp)
		if len(lp.Tokens) != 4 || len(lp.TokenLogprobs) != 4 || len(lp.TopLogprobs) != 4 || len(lp.TextOffset) != 4 || len(lp.TopLogprobs[0]) != 2 {
			t.Errorf("logprobs %+v", lp)
		}
	})
	t.Run("echo", func(t *testing.T) {
		p := base
		p.MaxTokens, p.Echo = openai.Int(4), openai.Bool(true)
		logJSON(t, "request", p)
		r, err := c.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		logJSON(t, "response choices", r.Choices)
		if !strings.HasPrefix(r.Choices[0].Text, "Once upon a time") || r.Choices[0].Text[len("Once upon a time"):] != text[:len(r.Choices[0].Text)-len("Once upon a time")] {
			t.Errorf("echo text %q", r.Choices[0].Text)
		}
	})
	t.Run("n=2 one prefill", func(t *testing.T) {
		before := metricValue(t, w, "kvcache_worker_prefills_total", "")
		p := base
		p.MaxTokens, p.N = openai.Int(6), openai.Int(2)
		logJSON(t, "request", p)
		r, err := c.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		logJSON(t, "response choices", r.Choices)
		if len(r.Choices) != 2 || r.Choices[1].Index != 1 || r.Choices[0].Text != text[:len(r.Choices[0].Text)] {
			t.Errorf("choices %+v", r.Choices)
		}
		if got := metricValue(t, w, "kvcache_worker_prefills_total", "") - before; got != 1 {
			t.Errorf("%g prefills for n=2, want 1", got)
		}
		t.Logf("kvcache_worker_prefills_total grew by 1 for n=2")
	})
	for _, include := range []bool{false, true} {
		t.Run("stream include_usage="+map[bool]string{false: "false", true: "true"}[include], func(t *testing.T) {
			p := base
			if include {
				p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			logJSON(t, "request (stream)", p)
			s := c.Completions.NewStreaming(ctx, p)
			var got strings.Builder
			var chunks, usages int
			var last openai.Completion
			for s.Next() {
				ch := s.Current()
				chunks++
				if len(ch.Choices) > 0 {
					got.WriteString(ch.Choices[0].Text)
				}
				if ch.Usage.TotalTokens > 0 {
					usages++
					if len(ch.Choices) != 0 {
						t.Errorf("usage on a chunk with choices: %s", ch.RawJSON())
					}
				}
				last = ch
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			t.Logf("response: %d chunks, text %q, last chunk %s", chunks, got.String(), last.RawJSON())
			if got.String() != text {
				t.Errorf("streamed %q, whole %q", got.String(), text)
			}
			if want := map[bool]int{false: 0, true: 1}[include]; usages != want {
				t.Errorf("%d usage chunks, want %d", usages, want)
			}
		})
	}
	t.Run("stream stop across chunks", func(t *testing.T) {
		at := asciiRun(text, 3, 3)
		if at < 0 {
			t.Fatalf("no stop candidate in %q", text)
		}
		p := base
		p.Stop = openai.CompletionNewParamsStopUnion{OfString: openai.String(text[at : at+3])}
		logJSON(t, "request (stream)", p)
		s := c.Completions.NewStreaming(ctx, p)
		var got strings.Builder
		var reason string
		for s.Next() {
			if ch := s.Current(); len(ch.Choices) > 0 {
				got.WriteString(ch.Choices[0].Text)
				if ch.Choices[0].FinishReason != "" {
					reason = string(ch.Choices[0].FinishReason)
				}
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		t.Logf("response: text %q finish_reason %s", got.String(), reason)
		if want := text[:strings.Index(text, text[at:at+3])]; got.String() != want || reason != "stop" {
			t.Errorf("streamed %q (%s), want %q (stop)", got.String(), reason, want)
		}
	})
}

func TestSDKChat(t *testing.T) {
	c, w := sdkClient(t)
	ctx := context.Background()
	base := openai.ChatCompletionNewParams{
		Model:       w.ModelID(),
		Messages:    []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("Be brief."), openai.UserMessage("Name a color.")},
		MaxTokens:   openai.Int(16),
		Temperature: openai.Float(0),
	}
	logJSON(t, "request", base)
	full, err := c.Chat.Completions.New(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	logJSON(t, "response", full)
	text := full.Choices[0].Message.Content
	if full.Object != "chat.completion" || full.Choices[0].Message.Role != "assistant" || full.Usage.PromptTokens == 0 {
		t.Fatalf("answer %+v", full)
	}

	t.Run("logprobs", func(t *testing.T) {
		p := base
		p.Logprobs, p.TopLogprobs = openai.Bool(true), openai.Int(3)
		logJSON(t, "request", p)
		r, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		content := r.Choices[0].Logprobs.Content
		logJSON(t, "response logprobs.content[0]", content[0])
		if len(content) != int(r.Usage.CompletionTokens) || len(content[0].TopLogprobs) != 3 || content[0].TopLogprobs[0].Logprob != content[0].Logprob {
			t.Errorf("logprobs %+v", r.Choices[0].Logprobs)
		}
	})
	t.Run("n=2 stream include_usage", func(t *testing.T) {
		before := metricValue(t, w, "kvcache_worker_prefills_total", "")
		p := base
		p.N = openai.Int(2)
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		logJSON(t, "request (stream)", p)
		s := c.Chat.Completions.NewStreaming(ctx, p)
		acc := openai.ChatCompletionAccumulator{}
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		logJSON(t, "accumulated", acc.ChatCompletion)
		if len(acc.Choices) != 2 || acc.Choices[0].Message.Content != text || acc.Choices[1].Message.Content != text || acc.Usage.CompletionTokens == 0 {
			t.Errorf("accumulated %+v, want two greedy copies of %q and the usage", acc.ChatCompletion, text)
		}
		if got := metricValue(t, w, "kvcache_worker_prefills_total", "") - before; got != 1 {
			t.Errorf("%g prefills for n=2, want 1", got)
		}
	})
	t.Run("stream without include_usage", func(t *testing.T) {
		s := c.Chat.Completions.NewStreaming(ctx, base)
		var got strings.Builder
		for s.Next() {
			ch := s.Current()
			if ch.JSON.Usage.Valid() && ch.Usage.TotalTokens > 0 {
				t.Errorf("usage without include_usage: %s", ch.RawJSON())
			}
			if len(ch.Choices) > 0 {
				got.WriteString(ch.Choices[0].Delta.Content)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		t.Logf("response: streamed %q", got.String())
		if got.String() != text {
			t.Errorf("streamed %q, whole %q", got.String(), text)
		}
	})
	t.Run("stop", func(t *testing.T) {
		stop := stopCandidate(text)
		if stop == "" {
			t.Fatalf("nothing in %q to stop on", text)
		}
		p := base
		p.Stop = openai.ChatCompletionNewParamsStopUnion{OfString: param.NewOpt(stop)}
		logJSON(t, "request", p)
		r, err := c.Chat.Completions.New(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		logJSON(t, "response choices", r.Choices)
		if want := text[:strings.Index(text, stop)]; r.Choices[0].Message.Content != want || r.Choices[0].FinishReason != "stop" {
			t.Errorf("content %q (%s), want %q (stop)", r.Choices[0].Message.Content, r.Choices[0].FinishReason, want)
		}
	})
	t.Run("unsupported fields are a 400 naming them", func(t *testing.T) {
		for name, p := range map[string]openai.ChatCompletionNewParams{
			"tools": func() openai.ChatCompletionNewParams {
				p := base
				p.Tools = []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "f"})}
				return p
			}(),
			"response_format": func() openai.ChatCompletionNewParams {
				p := base
				p.ResponseFormat = openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &openai.ResponseFormatJSONSchemaParam{
					JSONSchema: openai.ResponseFormatJSONSchemaJSONSchemaParam{Name: "x", Schema: map[string]any{"type": "object"}}}}
				return p
			}(),
			"reasoning_effort": func() openai.ChatCompletionNewParams {
				p := base
				p.ReasoningEffort = "high"
				return p
			}(),
		} {
			_, err := c.Chat.Completions.New(ctx, p)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 400 || apiErr.Param != name {
				t.Errorf("%s: %v, want a 400 naming it", name, err)
				continue
			}
			t.Logf("%s -> %d param=%s code=%s: %s", name, apiErr.StatusCode, apiErr.Param, apiErr.Code, apiErr.Message)
		}
	})
}

// stopCandidate is the first two consecutive characters of text that are
// real text (not U+FFFD from invalid bytes), or the first such character.
func stopCandidate(text string) string {
	rs := []rune(text)
	for i := 1; i < len(rs); i++ {
		if rs[i-1] != utf8.RuneError && rs[i] != utf8.RuneError {
			return string(rs[i-1 : i+1])
		}
	}
	for _, r := range rs {
		if r != utf8.RuneError {
			return string(r)
		}
	}
	return ""
}
