package worker

import (
	"context"
	"encoding/json"
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

// promptTokens parses and tokenizes the completions prompt, bounded first
// by its length. With echo it also returns the prompt's text: the string
// as sent, or for token ids the text of those tokens.
func (w *Worker) promptTokens(ctx context.Context, raw json.RawMessage, echo bool) ([]int, string, *apiError) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if e := w.textBound("prompt", len(s)); e != nil {
			return nil, "", e
		}
	}
	ids, e := promptTokens(raw, w.m.Tokenizer())
	if e != nil {
		return nil, "", e
	}
	if ctx.Err() != nil {
		return nil, "", badRequest("prompt", "client_gone", "the client went away")
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
// length of their contents.
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
	ids, err := tokenizer.EncodeChat(w.m.Tokenizer(), w.m.ChatTemplate(), msgs, true)
	if err != nil {
		return nil, badRequest("messages", "invalid_chat", "%v", err)
	}
	if ctx.Err() != nil {
		return nil, badRequest("messages", "client_gone", "the client went away")
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
	if req.ParseSpecial == nil || *req.ParseSpecial {
		ids = append(ids, tok.EncodeSpecial(*req.Content)...)
	} else {
		ids = append(ids, tok.Encode(*req.Content)...)
	}
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
