package tokenizer

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"
)

// BPE is a byte-level BPE tokenizer (GGUF tokenizer model "gpt2"): text is
// split into words by the vocabulary's pre-tokenizer (tokenizer.ggml.pre),
// each word's bytes are mapped to printable runes (the GPT-2
// bytes-to-unicode table), and adjacent symbols are merged by merge rank,
// lowest first, leftmost on ties, as llama.cpp does.
type BPE struct {
	base
	ranks map[[2]string]int
	pre   *preTokenizer
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

// NewBPE builds a byte-level BPE tokenizer from tokens, merges and the
// pre-tokenizer named by v.Pre ("" means "default"); an unknown name is
// ErrUnknownPreTokenizer.
func NewBPE(v Vocab) (*BPE, error) {
	pre, err := newPreTokenizer(v.Pre)
	if err != nil {
		return nil, err
	}
	b, err := newBase(v)
	if err != nil {
		return nil, err
	}
	t := &BPE{base: b, ranks: make(map[[2]string]int, len(v.Merges)), pre: pre}
	for i, m := range v.Merges {
		// The separator is the first space after the first byte, as in
		// llama.cpp, so a left side may itself start with a space.
		sp := -1
		if len(m) > 1 {
			if j := strings.IndexByte(m[1:], ' '); j >= 0 {
				sp = j + 1
			}
		}
		if sp < 0 || sp == len(m)-1 {
			return nil, fmt.Errorf("%w: merge %d %q is not \"left right\"", ErrInvalid, i, m)
		}
		k := [2]string{m[:sp], m[sp+1:]}
		if _, dup := t.ranks[k]; !dup {
			t.ranks[k] = i
		}
	}
	return t, nil
}

// PreTokenizer returns the name of the split rules in use.
func (t *BPE) PreTokenizer() string { return t.pre.name }

// Encode implements Tokenizer.
func (t *BPE) Encode(text string) []int { return t.encodeAccept(text, acceptUser, unlimited()) }

func (t *BPE) encodeAccept(text string, accept acceptFunc, l *limit) []int {
	return t.encodeWith(accept, text, l, t.encodePlain)
}

// EncodeSpecial implements Tokenizer.
func (t *BPE) EncodeSpecial(text string) []int { return t.encodeAccept(text, acceptAll, unlimited()) }

// encodePlain encodes text word by word as the pre-tokenizer finds the
// words, checking l after each.
func (t *BPE) encodePlain(text string, _ bool, ids []int, l *limit) []int {
	var sb strings.Builder
	t.pre.each(text, l, func(piece string) bool {
		if !l.ok() {
			return false
		}
		sb.Reset()
		for i := 0; i < len(piece); i++ {
			sb.WriteRune(byteRune[piece[i]])
		}
		n := len(ids)
		ids = t.bpe(sb.String(), ids)
		return l.add(len(ids) - n)
	})
	return ids
}

// bpeSym is a symbol of a word being merged: a byte range and list links.
type bpeSym struct {
	start, end int
	prev, next int
}

// bpePair is a candidate merge of the symbols left and right.
type bpePair struct {
	rank, left, right int
	size              int // byte length of the merged symbol, to detect stale pairs
}

type pairHeap []bpePair

func (h pairHeap) Len() int { return len(h) }
func (h pairHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].left < h[j].left
}
func (h pairHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *pairHeap) Push(x any)   { *h = append(*h, x.(bpePair)) }
func (h *pairHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// bpe merges the symbols (runes) of word and appends the ids. The heap
// keeps it O(n log n) in the word length, so one long word cannot stall a
// request.
func (t *BPE) bpe(word string, ids []int) []int {
	if t.pre.info.ignoreMerges {
		if id, ok := t.ids[word]; ok {
			return append(ids, id)
		}
	}
	syms := make([]bpeSym, 0, len(word))
	for i := 0; i < len(word); {
		_, n := utf8.DecodeRuneInString(word[i:])
		syms = append(syms, bpeSym{start: i, end: i + n, prev: len(syms) - 1, next: len(syms) + 1})
		i += n
	}
	if len(syms) == 0 {
		return ids
	}
	syms[len(syms)-1].next = -1
	h := &pairHeap{}
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		a, b := word[syms[l].start:syms[l].end], word[syms[r].start:syms[r].end]
		if rank, ok := t.ranks[[2]string{a, b}]; ok {
			heap.Push(h, bpePair{rank: rank, left: l, right: r, size: len(a) + len(b)})
		}
	}
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for h.Len() > 0 {
		p := heap.Pop(h).(bpePair)
		l, r := &syms[p.left], &syms[p.right]
		if l.end == l.start || r.end == r.start || l.next != p.right || r.end-l.start != p.size {
			continue // stale: a side was merged away or has grown
		}
		l.end = r.end
		r.start = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		try(l.prev, p.left)
		try(p.left, l.next)
	}
	for i := 0; i >= 0; i = syms[i].next {
		s := word[syms[i].start:syms[i].end]
		if id, ok := t.ids[s]; ok {
			ids = append(ids, id)
			continue
		}
		// As llama.cpp: a symbol outside the vocabulary falls back to
		// single-byte tokens; bytes without one are dropped.
		for j := 0; j < len(s); j++ {
			if id, ok := t.ids[s[j:j+1]]; ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// TokenBytes implements Tokenizer.
func (t *BPE) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.v.Tokens) {
		return nil
	}
	switch t.v.Types[id] {
	case TypeControl, TypeUnused:
		return nil
	case TypeUserDefined:
		// Added tokens are stored as raw text, not byte-mapped.
		return []byte(t.v.Tokens[id])
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
