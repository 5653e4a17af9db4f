package worker

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// errClientGone aborts a streamed generation whose client stopped reading.
var errClientGone = errors.New("worker: client went away")

// output writes one generation as a JSON body or as server-sent events:
// "data: {chunk}\n\n" per token, a final chunk carrying finish_reason,
// usage and timings, then "data: [DONE]\n\n".
type output struct {
	rw      http.ResponseWriter
	rc      *http.ResponseController
	id      string
	object  string
	model   string
	created int64
	chat    bool
	tok     tokenizer.Tokenizer
	text    utf8Buffer
	stream  bool // begin was called
}

func newOutput(rw http.ResponseWriter, model string, chat bool, tok tokenizer.Tokenizer) *output {
	o := &output{rw: rw, rc: http.NewResponseController(rw), model: model, created: now(), chat: chat, tok: tok}
	if chat {
		o.id, o.object = newID("chatcmpl-"), "chat.completion"
	} else {
		o.id, o.object = newID("cmpl-"), "text_completion"
	}
	return o
}

// begin sends the event-stream headers (and, for chat, the role delta) so
// the client sees the response start before the prefill ends.
func (o *output) begin() {
	o.stream = true
	h := o.rw.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.rw.WriteHeader(http.StatusOK)
	if o.chat {
		_ = o.event(o.chunk(&chatContent{Role: "assistant"}, "", nil, nil))
	} else {
		_ = o.rc.Flush()
	}
}

// token streams one generated token's text (whole UTF-8 characters only).
func (o *output) token(t int) error {
	s := o.text.push(o.tok.TokenBytes(t))
	if s == "" {
		return nil
	}
	return o.event(o.chunk(&chatContent{Content: s}, s, nil, nil))
}

// finish writes the result: the whole body, or the stream's last chunks.
func (o *output) finish(res *Result) {
	reason := res.FinishReason
	if !o.stream {
		text := o.tok.Decode(res.Tokens)
		var choice any = completionChoice{Text: text, FinishReason: &reason}
		if o.chat {
			choice = chatChoice{Message: &chatContent{Role: "assistant", Content: text}, FinishReason: &reason}
		}
		writeJSON(o.rw, http.StatusOK, response{ID: o.id, Object: o.object, Created: o.created, Model: o.model,
			Choices: []any{choice}, Usage: usageOf(res), Timings: &res.Timings})
		return
	}
	if s := o.text.flush(); s != "" {
		if o.event(o.chunk(&chatContent{Content: s}, s, nil, nil)) != nil {
			return
		}
	}
	last := o.chunk(&chatContent{}, "", &reason, res)
	if o.event(last) == nil {
		o.done()
	}
}

// fail reports an error inside a stream whose headers are already sent.
func (o *output) fail(e *apiError) {
	if o.event(map[string]*apiError{"error": e}) == nil {
		o.done()
	}
}

func (o *output) chunk(delta *chatContent, text string, reason *string, res *Result) response {
	r := response{ID: o.id, Object: o.object, Created: o.created, Model: o.model}
	if o.chat {
		r.Object = "chat.completion.chunk"
		r.Choices = []chatChoice{{Delta: delta, FinishReason: reason}}
	} else {
		r.Choices = []completionChoice{{Text: text, FinishReason: reason}}
	}
	if res != nil {
		r.Usage, r.Timings = usageOf(res), &res.Timings
	}
	return r
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

// utf8Buffer holds back the bytes of a character split across tokens, so
// every streamed piece is whole UTF-8 (byte-level tokens often split
// characters). Invalid bytes pass through and become U+FFFD in JSON.
type utf8Buffer struct{ pending []byte }

func (u *utf8Buffer) push(b []byte) string {
	u.pending = append(u.pending, b...)
	cut := len(u.pending)
	for i := len(u.pending) - 1; i >= 0 && i >= len(u.pending)-utf8.UTFMax; i-- {
		if utf8.RuneStart(u.pending[i]) {
			if !utf8.FullRune(u.pending[i:]) {
				cut = i
			}
			break
		}
	}
	s := string(u.pending[:cut])
	u.pending = append(u.pending[:0], u.pending[cut:]...)
	return s
}

func (u *utf8Buffer) flush() string {
	s := string(u.pending)
	u.pending = u.pending[:0]
	return s
}
