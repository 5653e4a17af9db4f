package tokenizer

import (
	"context"
	"sort"
	"strings"
)

// EncodeChat renders msgs with tmpl and tokenizes the prompt so that only
// the template's own text can produce control tokens: message content is
// never parsed for them (llama.cpp's parse_special = false), so a user who
// writes "<|im_end|><|im_start|>system" gets those characters as text, not
// a forged system turn. User-defined tokens still match everywhere, as in
// Encode. BOS is prepended when the tokenizer wants it and the template did
// not already write it. Errors wrap ErrTemplate.
func EncodeChat(t Tokenizer, tmpl Template, msgs []Message, addGenerationPrompt bool) ([]int, error) {
	return EncodeChatLimited(context.Background(), t, tmpl, msgs, addGenerationPrompt, NoLimit)
}

// EncodeChatLimited is EncodeChat bounded as EncodeLimited is: more than
// maxTokens ids (BOS included) is an error wrapping ErrTooManyTokens,
// found as the prompt is tokenized, and a done ctx stops the tokenizing
// with an error wrapping ctx.Err(); the ids produced so far come with
// either error. Rendering the template is not bounded; it is linear in
// the messages.
func EncodeChatLimited(ctx context.Context, t Tokenizer, tmpl Template, msgs []Message, addGenerationPrompt bool, maxTokens int) ([]int, error) {
	prompt, spans, exact, err := renderSpans(tmpl, msgs, addGenerationPrompt)
	if err != nil {
		return nil, err
	}
	l := newLimit(ctx, maxTokens)
	var ids []int
	if e, ok := t.(acceptEncoder); ok {
		accept := func(start, end int, user bool) bool { return user || !overlaps(spans, start, end) }
		if !exact {
			// The content's place in the prompt is a guess: a control
			// token whose text any message contains is text everywhere.
			forbidden := map[string]bool{}
			for _, m := range msgs {
				e.scanSpecials(m.Content, func(start, end int, user bool) bool {
					forbidden[m.Content[start:end]] = true
					return false
				})
			}
			accept = func(start, end int, user bool) bool {
				return user || (!overlaps(spans, start, end) && !forbidden[prompt[start:end]])
			}
		}
		ids = e.encodeAccept(prompt, accept, l)
	} else {
		ids = encodeSegments(t, prompt, spans, l)
	}
	if l.ok() && t.AddBOS() && t.BOS() >= 0 && (len(ids) == 0 || ids[0] != t.BOS()) {
		ids = append([]int{t.BOS()}, ids...)
		l.add(1)
	}
	l.ok()
	return ids, l.err
}

// acceptEncoder is implemented by this package's tokenizers: encode text,
// matching special tokens where accept allows.
type acceptEncoder interface {
	// l bounds the encoding: it stops once l says so.
	encodeAccept(text string, accept acceptFunc, l *limit) []int
	// scanSpecials offers every special-token match in text to accept.
	scanSpecials(text string, accept acceptFunc)
}

// encodeSegments is EncodeChat's fallback for other Tokenizer
// implementations: template text with EncodeSpecial, content with Encode,
// l checked after each segment.
func encodeSegments(t Tokenizer, prompt string, spans [][2]int, l *limit) []int {
	var ids []int
	at := 0
	seg := func(enc func(string) []int, s string) bool {
		if !l.ok() {
			return false
		}
		e := enc(s)
		ids = append(ids, e...)
		return l.add(len(e))
	}
	for _, s := range spans {
		if !seg(t.EncodeSpecial, prompt[at:s[0]]) || !seg(t.Encode, prompt[s[0]:s[1]]) {
			return ids
		}
		at = s[1]
	}
	seg(t.EncodeSpecial, prompt[at:])
	return ids
}

// overlaps reports whether [start, end) intersects one of the sorted,
// disjoint spans.
func overlaps(spans [][2]int, start, end int) bool {
	i := sort.Search(len(spans), func(i int) bool { return spans[i][1] > start })
	return i < len(spans) && spans[i][0] < end
}

// renderSpans renders the prompt and finds the byte ranges in it that came
// from message content. It renders again with each content wrapped in two
// marker runes that occur in no message; if the marked rendering, markers
// removed, is the real prompt, the markers give the ranges exactly. Many
// templates trim content ("| trim"), which moves the markers inward of the
// whitespace, so the second try wraps the trimmed content. Templates that
// cut content apart (split, slicing) defeat markers; then each content is
// searched for in the prompt, in order, which still keeps it from being
// read as control tokens wherever it is found; exact is then false.
func renderSpans(tmpl Template, msgs []Message, gen bool) (prompt string, spans [][2]int, exact bool, err error) {
	prompt, err = tmpl.Render(msgs, gen)
	if err != nil {
		return "", nil, false, err
	}
	open, close, ok := markerRunes(msgs)
	if ok {
		for _, trim := range []bool{false, true} {
			marked := make([]Message, len(msgs))
			for i, m := range msgs {
				marked[i] = m
				c := m.Content
				if trim {
					c = strings.TrimSpace(c)
				}
				if c != "" { // an empty content has nothing to protect, and templates test it for truth
					marked[i].Content = string(open) + c + string(close)
				}
			}
			k, err := tmpl.Render(marked, gen)
			if err != nil {
				continue
			}
			if text, spans, ok := unmark(k, open, close); ok && text == prompt {
				return prompt, spans, true, nil
			}
		}
	}
	return prompt, searchSpans(prompt, msgs), false, nil
}

// markerRunes picks two private-use runes that occur in no message.
func markerRunes(msgs []Message) (open, close rune, ok bool) {
	used := map[rune]bool{}
	for _, m := range msgs {
		for _, r := range m.Content {
			if r >= 0xF0000 {
				used[r] = true
			}
		}
	}
	for r := rune(0x10FFFD); r > 0xF0000; r -= 2 {
		if !used[r] && !used[r-1] {
			return r - 1, r, true
		}
	}
	return 0, 0, false
}

// unmark removes the markers from s and returns the ranges they enclosed;
// ok is false when they do not pair up. It works on bytes, so invalid
// UTF-8 in content survives; no message contains a marker, so every marker
// byte sequence in s was written by the wrapping.
func unmark(s string, open, close rune) (string, [][2]int, bool) {
	om, cm := string(open), string(close)
	var b strings.Builder
	var spans [][2]int
	for {
		i := strings.Index(s, om)
		if j := strings.Index(s, cm); j >= 0 && (i < 0 || j < i) {
			return "", nil, false // a close before any open
		}
		if i < 0 {
			b.WriteString(s)
			return b.String(), spans, true
		}
		b.WriteString(s[:i])
		s = s[i+len(om):]
		j := strings.Index(s, cm)
		if j < 0 || strings.Contains(s[:j], om) {
			return "", nil, false
		}
		if j > 0 {
			start := b.Len()
			b.WriteString(s[:j])
			spans = append(spans, [2]int{start, b.Len()})
		}
		s = s[j+len(cm):]
	}
}

// searchSpans finds each non-empty message content (or its trimmed form)
// in prompt, in message order.
func searchSpans(prompt string, msgs []Message) [][2]int {
	var spans [][2]int
	at := 0
	for _, m := range msgs {
		for _, c := range []string{m.Content, strings.TrimSpace(m.Content)} {
			if c == "" {
				continue
			}
			if i := strings.Index(prompt[at:], c); i >= 0 {
				spans = append(spans, [2]int{at + i, at + i + len(c)})
				at += i + len(c)
				break
			}
		}
	}
	return spans
}
