package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// errClientGone aborts a streamed generation whose client stopped reading.
var errClientGone = errors.New("worker: client went away")

// usage is the OpenAI usage object.
type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

func usageOf(r *Result) *usage {
	c := r.completionTokens()
	u := &usage{PromptTokens: r.PromptTokens, CompletionTokens: c, TotalTokens: r.PromptTokens + c}
	u.PromptTokensDetails.CachedTokens = r.CachedTokens
	return u
}

type completionChoice struct {
	Text         string              `json:"text"`
	Index        int                 `json:"index"`
	Logprobs     *completionLogprobs `json:"logprobs"`
	FinishReason *string             `json:"finish_reason"`
}

// completionLogprobs is the legacy completions shape: parallel arrays.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *chatContent  `json:"message,omitempty"`
	Delta        *chatContent  `json:"delta,omitempty"`
	Logprobs     *chatLogprobs `json:"logprobs"`
	FinishReason *string       `json:"finish_reason"`
}

type chatContent struct {
	Role    string `json:"role,omitempty"`
	Content string `json:"content,omitempty"`
}

// chatLogprobs is the chat shape: one object per token.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
	Refusal *string            `json:"refusal"`
}

type chatTokenLogprob struct {
	Token       string             `json:"token"`
	Logprob     float64            `json:"logprob"`
	Bytes       []int              `json:"bytes"`
	TopLogprobs []chatTopLogprobEl `json:"top_logprobs"`
}

type chatTopLogprobEl struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// response is the body of a completion, a chat completion or one of their
// stream chunks; Choices holds completionChoice or chatChoice values.
// Usage is an interface so that a stream with include_usage can send the
// spec's explicit "usage": null (a nil *usage) on its other chunks, while
// a nil interface omits the field.
type response struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices any      `json:"choices"`
	Usage   any      `json:"usage,omitempty"`
	Timings *Timings `json:"timings,omitempty"`
}

// output writes one generation as a JSON body or as server-sent events:
// "data: {chunk}\n\n" per settled piece of text, a chunk per choice with
// its finish_reason (the last one carrying timings), with include_usage a
// chunk with "choices": [] and the usage, then "data: [DONE]\n\n". Both
// forms are built from the same Deltas, so their text is identical.
type output struct {
	rw      http.ResponseWriter
	rc      *http.ResponseController
	id      string
	object  string
	model   string
	created int64
	chat    bool
	tok     tokenizer.Tokenizer
	p       params
	echo    string // completions with echo: the prompt's text
	stream  bool   // begin was called
	sent    []strings.Builder
}

func newOutput(rw http.ResponseWriter, model string, chat bool, tok tokenizer.Tokenizer, p params, echo string) *output {
	o := &output{rw: rw, rc: http.NewResponseController(rw), model: model, created: now(), chat: chat, tok: tok, p: p, echo: echo}
	if chat {
		o.id, o.object = newID("chatcmpl-"), "chat.completion"
	} else {
		o.id, o.object = newID("cmpl-"), "text_completion"
	}
	return o
}

// begin sends the event-stream headers (and, for chat, the role delta of
// each choice; for completions with echo, the prompt) so the client sees
// the response start before the prefill ends.
func (o *output) begin() error {
	o.stream = true
	o.sent = make([]strings.Builder, o.p.n)
	h := o.rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.rw.WriteHeader(http.StatusOK)
	for i := range o.p.n {
		switch {
		case o.chat:
			if err := o.event(o.chunk(i, &chatContent{Role: "assistant"}, nil, nil)); err != nil {
				return err
			}
		case o.echo != "":
			if err := o.event(o.chunk(i, &chatContent{Content: o.echo}, nil, nil)); err != nil {
				return err
			}
		}
	}
	return o.rc.Flush()
}

// delta streams one piece of a choice. Finish reasons are sent by finish,
// after every choice is done, so the last chunk can carry the timings.
func (o *output) delta(d Delta) error {
	if d.Text == "" && len(d.Logprobs) == 0 {
		return nil
	}
	lp := o.logprobs(d.Choice, d.Logprobs, d.Text)
	return o.event(o.chunk(d.Choice, &chatContent{Content: d.Text}, lp, nil))
}

// finish writes the result: the whole body, or the stream's last chunks.
func (o *output) finish(res *Result) {
	if !o.stream {
		choices := make([]any, len(res.Choices))
		for i, c := range res.Choices {
			reason := c.FinishReason
			lp := o.logprobs(i, c.Logprobs, c.Text)
			if o.chat {
				ch := chatChoice{Index: i, Message: &chatContent{Role: "assistant", Content: c.Text}, FinishReason: &reason}
				if o.p.logprobs {
					ch.Logprobs = lp.(*chatLogprobs)
				}
				choices[i] = ch
				continue
			}
			ch := completionChoice{Index: i, Text: o.echo + c.Text, FinishReason: &reason}
			if o.p.logprobs {
				ch.Logprobs = lp.(*completionLogprobs)
			}
			choices[i] = ch
		}
		writeJSON(o.rw, http.StatusOK, response{ID: o.id, Object: o.object, Created: o.created, Model: o.model,
			Choices: choices, Usage: usageOf(res), Timings: &res.Timings})
		return
	}
	for i, c := range res.Choices {
		reason := c.FinishReason
		r := o.chunk(i, &chatContent{}, nil, &reason)
		if i == len(res.Choices)-1 {
			r.Timings = &res.Timings
		}
		if o.event(r) != nil {
			return
		}
	}
	if o.p.includeUsage {
		r := response{ID: o.id, Object: o.chunkObject(), Created: o.created, Model: o.model, Choices: []any{}, Usage: usageOf(res)}
		if o.event(r) != nil {
			return
		}
	}
	o.done()
}

// fail reports an error inside a stream whose headers are already sent.
func (o *output) fail(e *apiError) {
	if o.event(map[string]*apiError{"error": e}) == nil {
		o.done()
	}
}

func (o *output) chunkObject() string {
	if o.chat {
		return "chat.completion.chunk"
	}
	return o.object
}

func (o *output) chunk(i int, delta *chatContent, lp any, reason *string) response {
	r := response{ID: o.id, Object: o.chunkObject(), Created: o.created, Model: o.model}
	if o.p.includeUsage {
		r.Usage = (*usage)(nil) // the spec's "usage": null on every other chunk
	}
	if o.chat {
		c := chatChoice{Index: i, Delta: delta, FinishReason: reason}
		if lp != nil {
			c.Logprobs = lp.(*chatLogprobs)
		}
		r.Choices = []chatChoice{c}
	} else {
		c := completionChoice{Index: i, Text: delta.Content, FinishReason: reason}
		if lp != nil {
			c.Logprobs = lp.(*completionLogprobs)
		}
		r.Choices = []completionChoice{c}
	}
	return r
}

// logprobs renders a choice's token logprobs in the endpoint's shape, or
// returns nil when none were asked for. text is the piece of the choice's
// text the tokens belong to; text_offset counts characters (code points)
// from the start of the returned text, echoed prompt included.
func (o *output) logprobs(choice int, lps []TokenLogprob, text string) any {
	if !o.p.logprobs {
		return nil
	}
	if o.chat {
		out := &chatLogprobs{Content: []chatTokenLogprob{}}
		for _, t := range lps {
			e := chatTokenLogprob{Token: o.tokenText(t.Token), Logprob: t.Logprob, Bytes: o.tokenBytes(t.Token), TopLogprobs: []chatTopLogprobEl{}}
			for _, c := range t.Top {
				e.TopLogprobs = append(e.TopLogprobs, chatTopLogprobEl{Token: o.tokenText(c.Token), Logprob: c.Logprob, Bytes: o.tokenBytes(c.Token)})
			}
			out.Content = append(out.Content, e)
		}
		return out
	}
	// Offsets: in a stream, text follows what was already sent.
	var prev string
	if o.stream {
		prev = o.sent[choice].String()
		o.sent[choice].WriteString(text)
		text = prev + text
	}
	base := utf8.RuneCountInString(o.echo)
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, t := range lps {
		out.Tokens = append(out.Tokens, o.tokenText(t.Token))
		out.TokenLogprobs = append(out.TokenLogprobs, t.Logprob)
		top := make(map[string]float64, len(t.Top))
		for _, c := range t.Top {
			top[o.tokenText(c.Token)] = c.Logprob
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, base+utf8.RuneCountInString(text[:min(t.Start, len(text))]))
	}
	return out
}

// tokenText is a token's text for logprobs: its bytes when they are valid
// UTF-8; else, as OpenAI writes them, "bytes:" and the bytes as \xNN
// escapes (so partial characters stay distinct keys of top_logprobs); for
// a control token (no text) its vocabulary name when the tokenizer can
// tell it.
func (o *output) tokenText(id int) string {
	if b := o.tok.TokenBytes(id); utf8.Valid(b) && b != nil {
		return string(b)
	} else if b != nil {
		var sb strings.Builder
		sb.WriteString("bytes:")
		for _, c := range b {
			fmt.Fprintf(&sb, "\\x%02x", c)
		}
		return sb.String()
	}
	if n, ok := o.tok.(interface{ TokenText(int) string }); ok {
		return n.TokenText(id)
	}
	return ""
}

// tokenBytes is the spec's "bytes": the UTF-8 bytes as integers.
func (o *output) tokenBytes(id int) []int {
	b := o.tok.TokenBytes(id)
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

func (o *output) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("worker: encode chunk: %w", err)
	}
	if _, err := fmt.Fprintf(o.rw, "data: %s\n\n", b); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	if err := o.rc.Flush(); err != nil {
		return fmt.Errorf("%w: %w", errClientGone, err)
	}
	return nil
}

func (o *output) done() {
	_, _ = o.rw.Write([]byte("data: [DONE]\n\n"))
	_ = o.rc.Flush()
}
