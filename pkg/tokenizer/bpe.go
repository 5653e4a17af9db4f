package tokenizer

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// BPE is a byte-level BPE tokenizer (GGUF tokenizer model "gpt2"): text is
// pre-tokenized with an approximation of the GPT-2 split pattern, each piece's
// bytes are mapped to printable runes (the GPT-2 bytes-to-unicode table),
// and adjacent symbols are merged by merge rank, lowest first.
type BPE struct {
	base
	ranks map[[2]string]int
}

// byteRune and runeByte are the GPT-2 bytes-to-unicode table and its
// inverse: printable Latin-1 bytes map to themselves, the rest to 256+n.
var byteRune, runeByte = func() ([256]rune, map[rune]byte) {
	var br [256]rune
	rb := map[rune]byte{}
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			br[b] = rune(b)
		} else {
			br[b] = rune(256 + n)
			n++
		}
		rb[br[b]] = byte(b)
	}
	return br, rb
}()

// NewBPE builds a byte-level BPE tokenizer from tokens and merges.
func NewBPE(v Vocab) (*BPE, error) {
	b, err := newBase(v)
	if err != nil {
		return nil, err
	}
	t := &BPE{base: b, ranks: make(map[[2]string]int, len(v.Merges))}
	for i, m := range v.Merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok || l == "" || r == "" {
			return nil, fmt.Errorf("%w: merge %d %q is not \"left right\"", ErrInvalid, i, m)
		}
		if _, dup := t.ranks[[2]string{l, r}]; !dup {
			t.ranks[[2]string{l, r}] = i
		}
	}
	return t, nil
}

// Encode implements Tokenizer.
func (t *BPE) Encode(text string) []int { return t.encodeWith(t.user, text, t.encodePlain) }

// EncodeSpecial implements Tokenizer.
func (t *BPE) EncodeSpecial(text string) []int { return t.encodeWith(t.control, text, t.encodePlain) }

func (t *BPE) encodePlain(text string, _ bool) []int {
	var ids []int
	for _, piece := range preTokenize(text) {
		var sb strings.Builder
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(byteRune[piece[i]])
		}
		ids = t.bpe(sb.String(), ids)
	}
	return ids
}

// bpe merges the runes of word by rank and appends the ids.
func (t *BPE) bpe(word string, ids []int) []int {
	if id, ok := t.ids[word]; ok {
		return append(ids, id)
	}
	var syms []string
	for _, r := range word {
		syms = append(syms, string(r))
	}
	for len(syms) > 1 {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := t.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	for _, s := range syms {
		if id, ok := t.ids[s]; ok {
			ids = append(ids, id)
		} else if t.v.UNK >= 0 {
			ids = append(ids, t.v.UNK)
		}
	}
	return ids
}

// preTokenize splits text like the GPT-2 pattern
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// (contractions matched case-insensitively, as llama-3 does).
func preTokenize(text string) []string {
	var out []string
	runeAt := func(i int) (rune, int) { return utf8.DecodeRuneInString(text[i:]) }
	class := func(r rune) int {
		switch {
		case unicode.IsLetter(r):
			return 1
		case unicode.IsNumber(r):
			return 2
		case unicode.IsSpace(r):
			return 3
		}
		return 4
	}
	for i := 0; i < len(text); {
		r, n := runeAt(i)
		if r == '\'' {
			rest := strings.ToLower(text[i+1:])
			matched := false
			for _, c := range []string{"s", "t", "re", "ve", "m", "ll", "d"} {
				if strings.HasPrefix(rest, c) {
					out = append(out, text[i:i+1+len(c)])
					i += 1 + len(c)
					matched = true
					break
				}
			}
			if matched {
				continue
			}
		}
		j := i
		if r == ' ' && i+n < len(text) {
			if r2, _ := runeAt(i + n); class(r2) != 3 {
				j = i + n
			}
		}
		if cr, _ := runeAt(j); class(cr) != 3 {
			c := class(cr)
			k := j
			for k < len(text) {
				r2, n2 := runeAt(k)
				if class(r2) != c {
					break
				}
				k += n2
			}
			out = append(out, text[i:k])
			i = k
			continue
		}
		// Whitespace run [i, k).
		k, last := i, i
		for k < len(text) {
			r2, n2 := runeAt(k)
			if class(r2) != 3 {
				break
			}
			last = k
			k += n2
		}
		switch {
		case k == len(text):
			out = append(out, text[i:k])
			i = k
		case last > i:
			// Leave the last whitespace rune for the next piece.
			out = append(out, text[i:last])
			i = last
		default:
			// A single whitespace rune before a non-space that is not a
			// plain space (e.g. "\n"): its own piece.
			out = append(out, text[i:k])
			i = k
		}
	}
	return out
}

// TokenBytes implements Tokenizer.
func (t *BPE) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.v.Tokens) {
		return nil
	}
	switch t.v.Types[id] {
	case TypeControl, TypeUnused:
		return nil
	}
	var out []byte
	for _, r := range t.v.Tokens[id] {
		if b, ok := runeByte[r]; ok {
			out = append(out, b)
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// Decode implements Tokenizer.
func (t *BPE) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.Write(t.TokenBytes(id))
	}
	return sb.String()
}
