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

// specials finds special-token strings in text in one left-to-right pass
// over a byte trie: at each position the longest acceptable token starting
// there wins (leftmost-longest, as Hugging Face's added-token matcher).
// The cost is O(len(text) * longest token), linear in the text.
type specials struct {
	nodes []specialNode // nodes[0] is the root
	first [256]bool     // bytes that start some token
}

type specialNode struct {
	next map[byte]int32
	id   int  // token id ending here, -1 if none
	user bool // the token is user-defined (matched even in plain text)
}

func newSpecials(m map[string]int, user map[string]bool) specials {
	s := specials{nodes: []specialNode{{id: -1}}}
	for t, id := range m {
		if t == "" {
			continue
		}
		s.first[t[0]] = true
		n := 0
		for i := 0; i < len(t); i++ {
			c, ok := s.nodes[n].next[t[i]]
			if !ok {
				if s.nodes[n].next == nil {
					s.nodes[n].next = map[byte]int32{}
				}
				c = int32(len(s.nodes))
				s.nodes[n].next[t[i]] = c
				s.nodes = append(s.nodes, specialNode{id: -1})
			}
			n = int(c)
		}
		s.nodes[n].id, s.nodes[n].user = id, user[t]
	}
	return s
}

// accept decides whether a token match text[start:end] counts; user is
// whether the token is user-defined.
type acceptFunc func(start, end int, user bool) bool

func acceptAll(int, int, bool) bool       { return true }
func acceptUser(_, _ int, user bool) bool { return user }
func (s *specials) empty() bool           { return len(s.nodes) <= 1 }

// split calls plain with each run of text between special tokens and
// special with each token's id, in order, until one of them returns false.
func (s *specials) split(text string, accept acceptFunc, plain func(string) bool, special func(int) bool) {
	s.scan(text, accept, plain, special)
}

// scan is split, returning the number of trie steps taken (tests check
// that it grows linearly with the text).
func (s *specials) scan(text string, accept acceptFunc, plain func(string) bool, special func(int) bool) (steps int) {
	run := 0 // start of the pending plain run
	for i := 0; i < len(text); {
		steps++
		if !s.first[text[i]] {
			i++
			continue
		}
		bestEnd, bestID := -1, -1
		n := 0
		for j := i; j < len(text); j++ {
			c, ok := s.nodes[n].next[text[j]]
			if !ok {
				break
			}
			steps++
			n = int(c)
			if nd := &s.nodes[n]; nd.id >= 0 && accept(i, j+1, nd.user) {
				bestEnd, bestID = j+1, nd.id
			}
		}
		if bestEnd < 0 {
			i++
			continue
		}
		if i > run && !plain(text[run:i]) {
			return steps
		}
		if !special(bestID) {
			return steps
		}
		i, run = bestEnd, bestEnd
	}
	if run < len(text) {
		plain(text[run:])
	}
	return steps
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
	return newSpecials(m, nil)
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
	return b.encodeAccept(text, acceptAll, unlimited())
}

func (Bytes) scanSpecials(text string, accept acceptFunc) {
	byteSpecialSet.scan(text, accept, func(string) bool { return true }, func(int) bool { return true })
}

// encodeAccept encodes a run of bytes only as far as the limit allows.
func (Bytes) encodeAccept(text string, accept acceptFunc, l *limit) []int {
	var ids []int
	byteSpecialSet.split(text, accept,
		func(s string) bool {
			l.pieces++
			if !l.ok() {
				return false
			}
			n := min(len(s), l.room()+1)
			for i := 0; i < n; i++ {
				ids = append(ids, int(s[i]))
			}
			return l.add(n)
		},
		func(id int) bool { ids = append(ids, id); return l.add(1) })
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
