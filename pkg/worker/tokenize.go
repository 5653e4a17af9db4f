package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// maxTokenBytes is the most bytes of input text one token can stand for:
// the longest token text, and at least a whole UTF-8 character (an
// unknown character may become one <unk> token). A text longer than
// (context - 1) * maxTokenBytes cannot fit the context, whatever the
// tokenizer does, so it is refused before it is tokenized.
func maxTokenBytes(tok tokenizer.Tokenizer) int {
	n := utf8.UTFMax
	for id := range tok.VocabSize() {
		n = max(n, len(tok.TokenBytes(id)))
	}
	return n
}

// textBound refuses a prompt text (or the sum of a chat's contents) that
// cannot fit the context, in time proportional to nothing but its length.
func (w *Worker) textBound(param string, textBytes int) *apiError {
	if limit := (w.info.ContextLen - 1) * w.maxTokB; textBytes > limit {
		return badRequest(param, "context_length_exceeded",
			"the prompt's %d bytes of text cannot fit the model's %d-token context (at most %d bytes per token)", textBytes, w.info.ContextLen, w.maxTokB)
	}
	return nil
}

// maxPromptTokens is the longest prompt that leaves room for a generated
// token: the prompt is tokenized no further than one token past it, and
// validate's own check (len(prompt) >= ContextLen) then never fires for
// a text prompt.
func (w *Worker) maxPromptTokens() int { return w.info.ContextLen - 1 }

// tokenized counts the tokens produced tokenizing a prompt.
func (w *Worker) tokenized(n int) { w.met.tokenized.Add(float64(n)) }

// tokenizeError maps a bounded tokenization's failure: too many tokens is
// the context-length 400 (named before the whole text was tokenized), a
// client that left is answered (unread) as gone.
func tokenizeError(param string, err error) *apiError {
	switch {
	case errors.Is(err, tokenizer.ErrTooManyTokens):
		return badRequest(param, "context_length_exceeded", "the prompt exceeds the model's context length, which must hold the prompt and at least one generated token (%v)", err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return badRequest(param, "client_gone", "the client went away")
	}
	return badRequest(param, "invalid_value", "%v", err)
}

// promptTokens parses and tokenizes the completions prompt, bounded first
// by its length and then by the context as tokens are produced. With echo
// it also returns the prompt's text: the string as sent, or for token ids
// the text of those tokens.
func (w *Worker) promptTokens(ctx context.Context, raw json.RawMessage, echo bool) ([]int, string, *apiError) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if e := w.textBound("prompt", len(s)); e != nil {
			return nil, "", e
		}
	}
	ids, e := promptTokens(ctx, raw, w.m.Tokenizer(), w.maxPromptTokens(), w.tokenized)
	if e != nil {
		return nil, "", e
	}
	if !echo {
		return ids, "", nil
	}
	if s == "" {
		s = rawText(w.m.Tokenizer(), ids)
	}
	return ids, s, nil
}

// chatTokens renders and tokenizes the messages, bounded first by the
// length of their contents and then by the context as tokens are
// produced.
func (w *Worker) chatTokens(ctx context.Context, msgs []tokenizer.Message) ([]int, *apiError) {
	n := 0
	for _, m := range msgs {
		n += len(m.Content)
	}
	if e := w.textBound("messages", n); e != nil {
		return nil, e
	}
	// Message content is never parsed for control tokens: only the
	// template's own text can produce them.
	ids, err := tokenizer.EncodeChatLimited(ctx, w.m.Tokenizer(), w.m.ChatTemplate(), msgs, true, w.maxPromptTokens())
	w.tokenized(len(ids))
	switch {
	case errors.Is(err, tokenizer.ErrTooManyTokens), err != nil && ctx.Err() != nil:
		return nil, tokenizeError("messages", err)
	case err != nil:
		return nil, badRequest("messages", "invalid_chat", "%v", err)
	}
	return ids, nil
}

// rawText concatenates the tokens' bytes: the text as generated, with
// SentencePiece's leading space kept (Decode strips it). Generated text
// is always built this way, streamed or not.
func rawText(tok tokenizer.Tokenizer, ids []int) string {
	var b []byte
	for _, id := range ids {
		b = append(b, tok.TokenBytes(id)...)
	}
	return string(b)
}

// tokenizeRequest is llama.cpp server's /tokenize body.
type tokenizeRequest struct {
	Content      *string `json:"content"`
	AddSpecial   bool    `json:"add_special"`
	ParseSpecial *bool   `json:"parse_special"` // default true, as llama.cpp
	WithPieces   bool    `json:"with_pieces"`
}

// tokenPiece is one token with its text: a string when the bytes are
// valid UTF-8, else the bytes as integers (llama.cpp's shape).
type tokenPiece struct {
	ID    int `json:"id"`
	Piece any `json:"piece"`
}

// handleTokenize answers {"tokens": [ids]} or, with with_pieces,
// {"tokens": [{"id": 1, "piece": "text"}]}. add_special prepends BOS when
// the model wants one; parse_special (default true) turns control-token
// text into control tokens.
func (w *Worker) handleTokenize(rw http.ResponseWriter, r *http.Request) {
	var req tokenizeRequest
	if e := decodeBody(rw, r, &req); e != nil {
		writeError(rw, e)
		return
	}
	if req.Content == nil {
		writeError(rw, badRequest("content", "missing_required_parameter", "'content' is required"))
		return
	}
	if _, ok := w.admitOrReject(rw, r); !ok {
		return
	}
	defer w.admit.release()
	tok := w.m.Tokenizer()
	ids := []int{}
	if req.AddSpecial && tok.AddBOS() && tok.BOS() >= 0 {
		ids = append(ids, tok.BOS())
	}
	// Not bounded by the context (llama.cpp tokenizes any text), but
	// stopped when the client leaves.
	enc := tokenizer.EncodeSpecialLimited
	if req.ParseSpecial != nil && !*req.ParseSpecial {
		enc = tokenizer.EncodeLimited
	}
	text, err := enc(r.Context(), tok, *req.Content, tokenizer.NoLimit)
	if err != nil {
		writeError(rw, tokenizeError("content", err))
		return
	}
	ids = append(ids, text...)
	if !req.WithPieces {
		writeJSON(rw, http.StatusOK, map[string]any{"tokens": ids})
		return
	}
	o := &output{tok: tok}
	pieces := make([]tokenPiece, len(ids))
	for i, id := range ids {
		b := tok.TokenBytes(id)
		switch {
		case b == nil:
			pieces[i] = tokenPiece{ID: id, Piece: o.tokenText(id)}
		case utf8.Valid(b):
			pieces[i] = tokenPiece{ID: id, Piece: string(b)}
		default:
			pieces[i] = tokenPiece{ID: id, Piece: o.tokenBytes(id)}
		}
	}
	writeJSON(rw, http.StatusOK, map[string]any{"tokens": pieces})
}

// handleDetokenize answers {"content": text} for {"tokens": [ids]}. It is
// the tokenizer's Decode, so detokenize(tokenize(x)) == x (SentencePiece's
// added leading space is removed); control tokens contribute no text.
func (w *Worker) handleDetokenize(rw http.ResponseWriter, r *http.Request) {
	var req struct {
		Tokens *[]int `json:"tokens"`
	}
	if e := decodeBody(rw, r, &req); e != nil {
		writeError(rw, e)
		return
	}
	if req.Tokens == nil {
		writeError(rw, badRequest("tokens", "missing_required_parameter", "'tokens' is required"))
		return
	}
	for i, id := range *req.Tokens {
		if id < 0 || id >= w.info.Vocab {
			writeError(rw, badRequest("tokens", "invalid_value", "%s", fmt.Sprintf("token %d at index %d is outside the vocabulary of %d", id, i, w.info.Vocab)))
			return
		}
	}
	writeJSON(rw, http.StatusOK, map[string]any{"content": w.m.Tokenizer().Decode(*req.Tokens)})
}
