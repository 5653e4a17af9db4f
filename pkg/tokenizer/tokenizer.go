// Package tokenizer turns text into model token ids and back.
//
// Three tokenizers are provided: Bytes (one token per byte plus a few
// specials, used by the embedded default model), SentencePiece-style "llama"
// vocabularies and byte-level BPE "gpt2" vocabularies, both built from GGUF
// metadata (FromGGUF) or from explicit vocabularies (NewSPM, NewBPE).
// Chat templates render role/content messages into prompt text.
package tokenizer

import (
	"errors"
	"sort"
	"strings"
)

// ErrUnsupported means the GGUF file names a tokenizer model this package
// does not implement.
var ErrUnsupported = errors.New("tokenizer: unsupported")

// ErrInvalid means tokenizer metadata is missing or inconsistent.
var ErrInvalid = errors.New("tokenizer: invalid vocabulary")

// Tokenizer converts between text and token ids. Implementations are
// immutable and safe for concurrent use.
type Tokenizer interface {
	// Encode tokenizes text. Special-token strings in text are treated as
	// plain text, so user content cannot inject control tokens. No BOS is
	// added.
	Encode(text string) []int
	// EncodeSpecial is Encode, except that the text of control tokens
	// (such as "<|im_start|>") becomes those tokens. Use it for prompts
	// rendered by a chat template.
	EncodeSpecial(text string) []int
	// Decode concatenates the text of ids; control tokens are omitted.
	Decode(ids []int) string
	// TokenBytes returns the raw bytes a token contributes to decoded text
	// (possibly a partial UTF-8 sequence); nil for control tokens and
	// invalid ids. Streaming decoders concatenate these.
	TokenBytes(id int) []byte
	// VocabSize is the number of token ids.
	VocabSize() int
	// BOS and EOS return the beginning/end-of-sequence ids, -1 if none.
	BOS() int
	EOS() int
	// AddBOS reports whether prompts should start with BOS.
	AddBOS() bool
}

// EncodePrompt tokenizes a rendered prompt: BOS first when the tokenizer
// wants it, then EncodeSpecial(text).
func EncodePrompt(t Tokenizer, text string) []int {
	var ids []int
	if t.AddBOS() && t.BOS() >= 0 {
		ids = append(ids, t.BOS())
	}
	return append(ids, t.EncodeSpecial(text)...)
}

// specials finds control-token strings in text, longest match first.
type specials struct {
	texts []string // sorted by decreasing length
	ids   map[string]int
}

func newSpecials(m map[string]int) specials {
	s := specials{ids: m}
	for t := range m {
		if t != "" {
			s.texts = append(s.texts, t)
		}
	}
	sort.Slice(s.texts, func(i, j int) bool {
		if len(s.texts[i]) != len(s.texts[j]) {
			return len(s.texts[i]) > len(s.texts[j])
		}
		return s.texts[i] < s.texts[j]
	})
	return s
}

// split calls plain for each run of ordinary text and special for each
// control token found, in order.
func (s specials) split(text string, plain func(string), special func(int)) {
	for text != "" {
		best, bestAt := "", -1
		for _, t := range s.texts {
			if i := strings.Index(text, t); i >= 0 && (bestAt < 0 || i < bestAt) {
				best, bestAt = t, i
			}
		}
		if bestAt < 0 {
			plain(text)
			return
		}
		if bestAt > 0 {
			plain(text[:bestAt])
		}
		special(s.ids[best])
		text = text[bestAt+len(best):]
	}
}

// Byte-level tokenizer ids.
const (
	ByteBOS      = 256 // "<|bos|>"
	ByteEOS      = 257 // "<|eos|>"
	ByteImStart  = 258 // "<|im_start|>"
	ByteImEnd    = 259 // "<|im_end|>"
	ByteVocab    = 260 // vocabulary size of Bytes
	byteSpecials = ByteVocab - 256
)

var byteSpecialNames = [byteSpecials]string{"<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"}

// Bytes is the byte-level tokenizer: ids 0..255 are the bytes, then BOS,
// EOS, <|im_start|> and <|im_end|> (ByteVocab ids). Its chat template is
// ChatML.
type Bytes struct{}

var byteSpecialSet = func() specials {
	m := map[string]int{}
	for i, n := range byteSpecialNames {
		m[n] = 256 + i
	}
	return newSpecials(m)
}()

// Encode implements Tokenizer.
func (Bytes) Encode(text string) []int {
	ids := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		ids[i] = int(text[i])
	}
	return ids
}

// EncodeSpecial implements Tokenizer.
func (b Bytes) EncodeSpecial(text string) []int {
	var ids []int
	byteSpecialSet.split(text,
		func(s string) { ids = append(ids, b.Encode(s)...) },
		func(id int) { ids = append(ids, id) })
	return ids
}

// Decode implements Tokenizer.
func (b Bytes) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.Write(b.TokenBytes(id))
	}
	return sb.String()
}

// TokenBytes implements Tokenizer.
func (Bytes) TokenBytes(id int) []byte {
	if id < 0 || id > 255 {
		return nil
	}
	return []byte{byte(id)}
}

// TokenText returns the vocabulary string of id ("<|eos|>" for specials).
func (Bytes) TokenText(id int) string {
	switch {
	case id >= 0 && id < 256:
		return string([]byte{byte(id)})
	case id >= 256 && id < ByteVocab:
		return byteSpecialNames[id-256]
	}
	return ""
}

// VocabSize implements Tokenizer.
func (Bytes) VocabSize() int { return ByteVocab }

// BOS implements Tokenizer.
func (Bytes) BOS() int { return ByteBOS }

// EOS implements Tokenizer.
func (Bytes) EOS() int { return ByteEOS }

// AddBOS implements Tokenizer.
func (Bytes) AddBOS() bool { return true }
