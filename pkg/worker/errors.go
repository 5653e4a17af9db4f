package worker

import "errors"

// Errors returned by Generate for requests that cannot be served as asked.
// They are the caller's fault; the HTTP layer maps each to a 400 in one
// place (apiErrorFor). Anything else is a server error.
var (
	// ErrEmptyPrompt: the prompt has no tokens.
	ErrEmptyPrompt = errors.New("worker: empty prompt")
	// ErrPromptTooLong: the prompt leaves no room in the context for even
	// one generated token.
	ErrPromptTooLong = errors.New("worker: prompt exceeds the model's context length")
	// ErrMaxTokens: max_tokens is below 1 or more than the context leaves
	// after the prompt.
	ErrMaxTokens = errors.New("worker: max_tokens out of range")
	// ErrBadToken: a prompt token id is outside the vocabulary.
	ErrBadToken = errors.New("worker: token id out of range")
)

// ErrBadOption: a generation option (n, stop, top_logprobs) is out of
// range. The HTTP layer validates each field itself and names it; this
// guards direct callers of Generate.
var ErrBadOption = errors.New("worker: option out of range")
