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
	// runBytes bounds the bytes of (space-marked) text one token can stand
	// for, so a run of n bytes yields at least n/runBytes tokens; 0 when
	// no bound holds (a symbol with neither byte tokens nor UNK yields
	// none).
	runBytes int
}

// NewSPM builds a SentencePiece tokenizer from a vocabulary with scores.
func NewSPM(v Vocab) (*SPM, error) {
	b, err := newBase(v)
	if err != nil {
		return nil, err
	}
	t := &SPM{base: b}
	allBytes := true
	for i := range t.byteIDs {
		t.byteIDs[i] = -1
		if id, ok := b.ids[fmt.Sprintf("<0x%02X>", i)]; ok {
			t.byteIDs[i] = id
		} else {
			allBytes = false
		}
	}
	// Every final symbol is a token or, unmerged, one character, and
	// yields at least one id when byte tokens or UNK cover it.
	if allBytes || v.UNK >= 0 {
		t.runBytes = utf8.UTFMax
		for _, s := range v.Tokens {
			t.runBytes = max(t.runBytes, len(s))
		}
	}
	return t, nil
}

// Encode implements Tokenizer.
func (t *SPM) Encode(text string) []int { return t.encodeAccept(text, acceptUser, unlimited()) }

func (t *SPM) encodeAccept(text string, accept acceptFunc, l *limit) []int {
	return t.encodeWith(accept, text, l, t.encodePlain)
}

// EncodeSpecial implements Tokenizer.
func (t *SPM) EncodeSpecial(text string) []int { return t.encodeAccept(text, acceptAll, unlimited()) }

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

// encodePlain merges a whole run at once, as SentencePiece does, so it
// refuses up front a run whose length alone implies more tokens than l
// has room for.
func (t *SPM) encodePlain(text string, first bool, ids []int, l *limit) []int {
	if text == "" || !l.ok() {
		return ids
	}
	if first && t.v.AddSpacePrefix {
		text = " " + text
	}
	if t.runBytes > 0 {
		marked := len(text) + strings.Count(text, " ")*(len(spmSpace)-1)
		if least := (marked + t.runBytes - 1) / t.runBytes; least > l.room() {
			l.exceeded()
			return ids
		}
	}
	text = strings.ReplaceAll(text, " ", spmSpace)
	syms := make([]spmSymbol, 0, len(text))
	for i := 0; i < len(text); {
		_, n := utf8.DecodeRuneInString(text[i:])
		syms = append(syms, spmSymbol{start: i, end: i + n, prev: len(syms) - 1, next: len(syms) + 1})
		i += n
	}
	syms[len(syms)-1].next = -1
	l.pieces += len(syms)
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
	n, most := len(ids), len(ids)+l.room()+1 // ids past the limit are not collected
	for i := 0; i >= 0 && len(ids) < most; i = syms[i].next {
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
	l.add(len(ids) - n)
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
