package tokenizer

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// ErrTooManyTokens means a bounded encoding (EncodeLimited,
// EncodeSpecialLimited, EncodeChatLimited) would produce more tokens than
// its limit: it stopped as soon as that was certain, after at most
// limit+1 tokens, without tokenizing the rest of the text.
var ErrTooManyTokens = errors.New("tokenizer: text exceeds the token limit")

// NoLimit as a token limit bounds nothing (the context still stops the
// encoding).
const NoLimit = -1

// EncodeLimited is t.Encode(text) bounded by a token count and a context:
// once more than maxTokens tokens are certain it stops with an error
// wrapping ErrTooManyTokens, and once ctx is done with an error wrapping
// ctx.Err(). Both are checked as tokens are produced, once per
// pre-tokenized word (BPE), run of text between special tokens
// (SentencePiece, which also refuses a run whose length alone implies too
// many tokens) or run of bytes (Bytes), so the cost of an oversized text
// is proportional to maxTokens, not to the text. A negative maxTokens
// (NoLimit) bounds nothing. On error the ids produced before the
// encoding stopped are returned too (at most maxTokens+1 plus the last
// word's), so callers can account for the work done. Tokenizers of other
// packages are encoded whole and checked after.
func EncodeLimited(ctx context.Context, t Tokenizer, text string, maxTokens int) ([]int, error) {
	return encodeLimited(t, text, false, newLimit(ctx, maxTokens))
}

// EncodeSpecialLimited is EncodeLimited for EncodeSpecial: control-token
// text becomes control tokens.
func EncodeSpecialLimited(ctx context.Context, t Tokenizer, text string, maxTokens int) ([]int, error) {
	return encodeLimited(t, text, true, newLimit(ctx, maxTokens))
}

func encodeLimited(t Tokenizer, text string, special bool, l *limit) ([]int, error) {
	var ids []int
	if e, ok := t.(acceptEncoder); ok {
		accept := acceptUser
		if special {
			accept = acceptAll
		}
		ids = e.encodeAccept(text, accept, l)
	} else if l.ok() {
		if special {
			ids = t.EncodeSpecial(text)
		} else {
			ids = t.Encode(text)
		}
		l.add(len(ids))
	}
	l.ok()
	return ids, l.err
}

// limit bounds one encoding: it counts the tokens produced and stops the
// encoding once there are more than max, or ctx is done. The zero value
// is not usable; see newLimit.
type limit struct {
	ctx    context.Context
	done   <-chan struct{} // ctx.Done(), nil when it never closes
	max    int             // most tokens allowed; negative: no bound
	tokens int             // produced so far
	// pieces counts units of work: pre-tokenizer pieces at every stage,
	// SentencePiece symbols, byte runs. Tests check that it stays
	// proportional to max, not to the text.
	pieces int
	err    error
}

func newLimit(ctx context.Context, max int) *limit {
	return &limit{ctx: ctx, done: ctx.Done(), max: max}
}

// unlimited is the limit of the unbounded Encode methods.
func unlimited() *limit { return newLimit(context.Background(), NoLimit) }

// ok reports whether the encoding may go on: no limit reached and ctx not
// done. It costs a non-blocking channel receive.
func (l *limit) ok() bool {
	if l.err != nil {
		return false
	}
	select {
	case <-l.done:
		l.err = fmt.Errorf("tokenizer: encoding stopped: %w", l.ctx.Err())
		return false
	default:
		return true
	}
}

// room is how many more tokens fit under the limit (math.MaxInt/2
// without one, so room()+1 cannot overflow).
func (l *limit) room() int {
	if l.max < 0 {
		return math.MaxInt / 2
	}
	return max(0, l.max-l.tokens)
}

// add counts n more tokens; false once there are more than the limit.
func (l *limit) add(n int) bool {
	l.tokens += n
	if l.max >= 0 && l.tokens > l.max && l.err == nil {
		l.exceeded()
	}
	return l.err == nil
}

// exceeded records that the text needs more tokens than the limit.
func (l *limit) exceeded() {
	l.err = fmt.Errorf("%w: more than %d tokens", ErrTooManyTokens, l.max)
}
