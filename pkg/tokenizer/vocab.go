package tokenizer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// Token types as stored in tokenizer.ggml.token_type.
const (
	TypeNormal      = 1
	TypeUnknown     = 2
	TypeControl     = 3
	TypeUserDefined = 4
	TypeUnused      = 5
	TypeByte        = 6
)

// Vocab is the data a vocabulary-based tokenizer is built from, mirroring
// the tokenizer.ggml.* GGUF keys.
type Vocab struct {
	Tokens []string  // token text by id
	Scores []float32 // SentencePiece merge scores (SPM); nil means all 0
	Types  []int32   // token types (TypeNormal, ...); nil means inferred
	Merges []string  // BPE merges "left right", highest priority first
	BOS    int       // -1 if none
	EOS    int       // -1 if none
	UNK    int       // -1 if none
	AddBOS bool      // prompts start with BOS
	// AddSpacePrefix (SPM) prepends a space to the text, as SentencePiece
	// does by default.
	AddSpacePrefix bool
	// Pre (BPE) names the pre-tokenizer, as tokenizer.ggml.pre: see
	// PreTokenizers. "" means "default".
	Pre string
}

// Options tune how FromGGUFOptions builds a tokenizer.
type Options struct {
	// AcceptUnknownPre makes an unknown tokenizer.ggml.pre fall back to the
	// "default" split rules (with a warning through Warn) instead of
	// failing with ErrUnknownPreTokenizer. Text is then split differently
	// from the model's training, as llama.cpp warns for a missing name.
	AcceptUnknownPre bool
	// Warn receives warnings; nil discards them.
	Warn func(msg string)
}

// base is shared state of vocabulary-based tokenizers.
type base struct {
	v       Vocab
	ids     map[string]int
	special specials // control and user-defined tokens
}

func newBase(v Vocab) (base, error) {
	n := len(v.Tokens)
	if n == 0 {
		return base{}, fmt.Errorf("%w: empty token list", ErrInvalid)
	}
	if v.Scores != nil && len(v.Scores) != n {
		return base{}, fmt.Errorf("%w: %d scores for %d tokens", ErrInvalid, len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) != n {
		return base{}, fmt.Errorf("%w: %d token types for %d tokens", ErrInvalid, len(v.Types), n)
	}
	for _, id := range []struct {
		name string
		id   int
	}{{"bos", v.BOS}, {"eos", v.EOS}, {"unk", v.UNK}} {
		if id.id < -1 || id.id >= n {
			return base{}, fmt.Errorf("%w: %s id %d outside vocabulary of %d", ErrInvalid, id.name, id.id, n)
		}
	}
	if v.Types == nil {
		v.Types = make([]int32, n)
		for i, t := range v.Tokens {
			v.Types[i] = TypeNormal
			if _, ok := parseByteToken(t); ok {
				v.Types[i] = TypeByte
			}
		}
		for _, id := range []int{v.BOS, v.EOS} {
			if id >= 0 {
				v.Types[id] = TypeControl
			}
		}
	}
	b := base{v: v, ids: make(map[string]int, n)}
	ctl, usr := map[string]int{}, map[string]bool{}
	for i, t := range v.Tokens {
		if _, dup := b.ids[t]; !dup {
			b.ids[t] = i
		}
		switch v.Types[i] {
		case TypeControl:
			if len(t) > 1 {
				ctl[t] = i
			}
		case TypeUserDefined:
			ctl[t] = i
			usr[t] = true
		}
	}
	b.special = newSpecials(ctl, usr)
	return b, nil
}

func parseByteToken(t string) (byte, bool) {
	if len(t) != 6 || !strings.HasPrefix(t, "<0x") || t[5] != '>' {
		return 0, false
	}
	var v byte
	for _, c := range t[3:5] {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = byte(c - '0')
		case c >= 'A' && c <= 'F':
			d = byte(c-'A') + 10
		case c >= 'a' && c <= 'f':
			d = byte(c-'a') + 10
		default:
			return 0, false
		}
		v = v<<4 | d
	}
	return v, true
}

func (b *base) VocabSize() int { return len(b.v.Tokens) }

func (b *base) scanSpecials(text string, accept acceptFunc) {
	b.special.scan(text, accept, func(string) bool { return true }, func(int) bool { return true })
}

// TokenText returns the vocabulary string of id ("" if out of range).
func (b *base) TokenText(id int) string {
	if id < 0 || id >= len(b.v.Tokens) {
		return ""
	}
	return b.v.Tokens[id]
}
func (b *base) BOS() int     { return b.v.BOS }
func (b *base) EOS() int     { return b.v.EOS }
func (b *base) AddBOS() bool { return b.v.AddBOS }

// encodeWith splits out special tokens and encodes the plain runs. A plain
// run is "leading" at the start of the text or right after a special token
// (where SentencePiece adds its space prefix, as llama.cpp does). plain
// appends a run's ids, counting them in l; encoding stops when l says so.
func (b *base) encodeWith(accept acceptFunc, text string, l *limit, plain func(s string, leading bool, ids []int, l *limit) []int) []int {
	var ids []int
	leading := true
	b.special.split(text, accept,
		func(s string) bool { ids = plain(s, leading, ids, l); leading = false; return l.ok() },
		func(id int) bool { ids = append(ids, id); leading = true; return l.add(1) })
	return ids
}

// FromGGUF builds the tokenizer described by a GGUF file's tokenizer.ggml.*
// metadata: model "llama" (SentencePiece), "gpt2" (byte-level BPE, split by
// the rules tokenizer.ggml.pre names) or "bytes" (the byte-level tokenizer
// of the embedded model). An unknown pre-tokenizer is an error wrapping
// ErrUnknownPreTokenizer and naming it.
func FromGGUF(f *gguf.File) (Tokenizer, error) { return FromGGUFOptions(f, Options{}) }

// FromGGUFOptions is FromGGUF with options.
func FromGGUFOptions(f *gguf.File, o Options) (Tokenizer, error) {
	model, err := f.String("tokenizer.ggml.model")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if model == "bytes" {
		return Bytes{}, nil
	}
	var v Vocab
	if v.Tokens, err = f.Strings("tokenizer.ggml.tokens"); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	opt := func(err error) error {
		if errors.Is(err, gguf.ErrNotFound) {
			return nil
		}
		return err
	}
	if v.Scores, err = f.Float32s("tokenizer.ggml.scores"); opt(err) != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	types, err := f.Ints("tokenizer.ggml.token_type")
	if opt(err) != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if types != nil {
		v.Types = make([]int32, len(types))
		for i, t := range types {
			v.Types[i] = int32(t)
		}
	}
	id := func(key string) (int, error) {
		u, err := f.Uint(key)
		if errors.Is(err, gguf.ErrNotFound) {
			return -1, nil
		}
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if u >= uint64(len(v.Tokens)) {
			return 0, fmt.Errorf("%w: %s = %d outside vocabulary of %d", ErrInvalid, key, u, len(v.Tokens))
		}
		return int(u), nil
	}
	if v.BOS, err = id("tokenizer.ggml.bos_token_id"); err != nil {
		return nil, err
	}
	if v.EOS, err = id("tokenizer.ggml.eos_token_id"); err != nil {
		return nil, err
	}
	if v.UNK, err = id("tokenizer.ggml.unknown_token_id"); err != nil {
		return nil, err
	}
	flag := func(key string, def bool) bool {
		if b, err := f.Bool(key); err == nil {
			return b
		}
		return def
	}
	switch model {
	case "llama":
		v.AddBOS = flag("tokenizer.ggml.add_bos_token", true)
		v.AddSpacePrefix = flag("tokenizer.ggml.add_space_prefix", true)
		return NewSPM(v)
	case "gpt2":
		v.AddBOS = flag("tokenizer.ggml.add_bos_token", false)
		if v.Merges, err = f.Strings("tokenizer.ggml.merges"); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if v.Pre, err = f.String("tokenizer.ggml.pre"); opt(err) != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		if _, known := preNames[v.Pre]; !known && v.Pre != "" && o.AcceptUnknownPre {
			if o.Warn != nil {
				o.Warn(fmt.Sprintf("tokenizer: unknown pre-tokenizer %q, using \"default\" split rules: text will not be tokenized as the model was trained", v.Pre))
			}
			v.Pre = "default"
		}
		return NewBPE(v)
	}
	return nil, fmt.Errorf("%w: tokenizer model %q", ErrUnsupported, model)
}

// WriteBytesGGUF adds the metadata FromGGUF maps back to the Bytes
// tokenizer: model "bytes" plus a descriptive token list.
func WriteBytesGGUF(w *gguf.Writer, b Bytes) error {
	tokens := make([]string, ByteVocab)
	types := make([]int32, ByteVocab)
	for i := range tokens {
		if i < 256 {
			tokens[i] = fmt.Sprintf("<0x%02X>", i)
			types[i] = TypeByte
		} else {
			tokens[i] = b.TokenText(i)
			types[i] = TypeControl
		}
	}
	for _, kv := range []struct {
		k string
		v any
	}{
		{"tokenizer.ggml.model", "bytes"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.bos_token_id", uint32(b.BOS())},
		{"tokenizer.ggml.eos_token_id", uint32(b.EOS())},
		{"tokenizer.ggml.add_bos_token", b.AddBOS()},
	} {
		if err := w.SetKV(kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}
