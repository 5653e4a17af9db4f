package tokenizer

import (
	"container/heap"
	"fmt"
	"strings"
	"unicode/utf8"
)

// spmSpace is the SentencePiece whitespace marker "▁" (U+2581).
const spmSpace = "\u2581"

// SPM is a SentencePiece-style tokenizer (GGUF tokenizer model "llama"):
// spaces become "▁", the text is split into characters, and adjacent
// symbols are merged greedily, highest vocabulary score first (leftmost on
// ties), while the merged string is a token. Symbols left outside the
// vocabulary fall back to <0xNN> byte tokens, or UNK.
type SPM struct {
	base
	byteIDs [256]int // -1 when the byte token is missing
}

// NewSPM builds a SentencePiece tokenizer from a vocabulary with scores.
func NewSPM(v Vocab) (*SPM, error) {
	b, err := newBase(v)
	if err != nil {
		return nil, err
	}
	t := &SPM{base: b}
	for i := range t.byteIDs {
		t.byteIDs[i] = -1
		if id, ok := b.ids[fmt.Sprintf("<0x%02X>", i)]; ok {
			t.byteIDs[i] = id
		}
	}
	return t, nil
}

// Encode implements Tokenizer.
func (t *SPM) Encode(text string) []int { return t.encodeWith(acceptUser, text, t.encodePlain) }

func (t *SPM) encodeAccept(text string, accept acceptFunc) []int {
	return t.encodeWith(accept, text, t.encodePlain)
}

// EncodeSpecial implements Tokenizer.
func (t *SPM) EncodeSpecial(text string) []int { return t.encodeWith(acceptAll, text, t.encodePlain) }

type spmSymbol struct {
	start, end int // byte range in the text
	prev, next int // -1 at the ends
}

type spmBigram struct {
	left, right int
	score       float32
	size        int
}

type bigramHeap []spmBigram

func (h bigramHeap) Len() int { return len(h) }
func (h bigramHeap) Less(i, j int) bool {
	if h[i].score != h[j].score {
		return h[i].score > h[j].score
	}
	return h[i].left < h[j].left
}
func (h bigramHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *bigramHeap) Push(x any)   { *h = append(*h, x.(spmBigram)) }
func (h *bigramHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (t *SPM) encodePlain(text string, first bool) []int {
	if text == "" {
		return nil
	}
	if first && t.v.AddSpacePrefix {
		text = " " + text
	}
	text = strings.ReplaceAll(text, " ", spmSpace)
	syms := make([]spmSymbol, 0, len(text))
	for i := 0; i < len(text); {
		_, n := utf8.DecodeRuneInString(text[i:])
		syms = append(syms, spmSymbol{start: i, end: i + n, prev: len(syms) - 1, next: len(syms) + 1})
		i += n
	}
	syms[len(syms)-1].next = -1
	h := &bigramHeap{}
	try := func(l, r int) {
		if l < 0 || r < 0 {
			return
		}
		s := text[syms[l].start:syms[r].end]
		if id, ok := t.ids[s]; ok {
			var score float32
			if t.v.Scores != nil {
				score = t.v.Scores[id]
			}
			heap.Push(h, spmBigram{left: l, right: r, score: score, size: len(s)})
		}
	}
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for h.Len() > 0 {
		bg := heap.Pop(h).(spmBigram)
		l, r := &syms[bg.left], &syms[bg.right]
		// Skip stale entries: either side already merged away or grown.
		if l.end == l.start || r.end == r.start || l.next != bg.right || r.end-l.start != bg.size {
			continue
		}
		l.end = r.end
		r.start = r.end // mark empty
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = bg.left
		}
		try(l.prev, bg.left)
		try(bg.left, l.next)
	}
	var ids []int
	for i := 0; i >= 0; i = syms[i].next {
		s := text[syms[i].start:syms[i].end]
		if id, ok := t.ids[s]; ok {
			ids = append(ids, id)
			continue
		}
		for j := 0; j < len(s); j++ {
			switch {
			case t.byteIDs[s[j]] >= 0:
				ids = append(ids, t.byteIDs[s[j]])
			case t.v.UNK >= 0:
				ids = append(ids, t.v.UNK)
				j = len(s)
			}
		}
	}
	return ids
}

// TokenBytes implements Tokenizer.
func (t *SPM) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.v.Tokens) {
		return nil
	}
	switch t.v.Types[id] {
	case TypeControl, TypeUnused:
		return nil
	case TypeUserDefined:
		return []byte(t.v.Tokens[id])
	case TypeByte:
		if b, ok := parseByteToken(t.v.Tokens[id]); ok {
			return []byte{b}
		}
	}
	return []byte(strings.ReplaceAll(t.v.Tokens[id], spmSpace, " "))
}

// Decode implements Tokenizer. With AddSpacePrefix, the leading space the
// encoder added is removed.
func (t *SPM) Decode(ids []int) string {
	var sb strings.Builder
	for _, id := range ids {
		sb.Write(t.TokenBytes(id))
	}
	s := sb.String()
	if t.v.AddSpacePrefix {
		s = strings.TrimPrefix(s, " ")
	}
	return s
}
