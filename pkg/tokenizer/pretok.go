package tokenizer

import (
	"errors"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/dlclark/regexp2/v2"
)

// ErrUnknownPreTokenizer means tokenizer.ggml.pre names split rules this
// package does not know. llama.cpp refuses such files too; Options can
// accept them with the "default" rules instead.
var ErrUnknownPreTokenizer = errors.New("tokenizer: unknown pre-tokenizer")

// The split patterns below are the ones llama.cpp's src/llama-vocab.cpp
// applies per pre-tokenizer type (they come from each model's
// tokenizer.json, adapted there for a regex engine without (?i:...)). Each
// rule is a list of patterns applied in sequence: a pattern splits every
// piece of the previous stage into its matches and the text between them.
const (
	patGPT2   = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
	patLlama3 = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
	patQwen2  = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
	patBloom  = " ?[^(\\s|.,!?…。，、।۔،)]+"
)

// preRules maps a rule set to its patterns.
var preRules = map[string][]string{
	"default": {
		"[\\p{P}\\$\\+<=>\\^~\\|]+",
		patGPT2,
		"\\p{N}+",
		"[0-9][0-9][0-9]",
	},
	"llama3": {patLlama3},
	"deepseek-llm": {
		"[\r\n]",
		"\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\U00010400-\U0001044f𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
		"\\s?[!-/:-~！-／：-～‘-‟　-。]+",
		"\\s+$",
		"[一-龥ࠀ-一가-퟿]+",
		"\\p{N}+",
	},
	"deepseek-v3": {
		"\\p{N}{1,3}",
		"[一-龥぀-ゟ゠-ヿ]+",
		"[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
	},
	"deepseek-coder": {
		"[\r\n]",
		"\\s?\\p{L}+",
		"\\s?\\p{P}+",
		"[一-龥ࠀ-一가-퟿]+",
		"\\p{N}",
	},
	"falcon": {
		"[\\p{P}\\$\\+<=>\\^~\\|`]+",
		patGPT2,
		"[0-9][0-9][0-9]",
	},
	"starcoder": {"\\p{N}", patGPT2},
	"gpt2":      {patGPT2},
	"qwen2":     {patQwen2},
	"bloom":     {patBloom},
	"chatglm4":  {patLlama3},
	"viking":    {patBloom, "\\p{N}"},
	"tekken": {
		"[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+|[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
	},
	"chameleon": {
		"<sentinel:[0-9]+>",
		"(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
		"([\\t\\n]|    |  )",
		"\\p{N}",
		"[\\p{P}!-/:-@\\[-`{-~]",
		patGPT2,
	},
}

// preNames maps every tokenizer.ggml.pre value llama.cpp recognises (in the
// snapshot this package follows) to its rule set and the flags llama.cpp
// sets with it.
var preNames = map[string]preInfo{
	"default":          {rules: "default"},
	"llama3":           {rules: "llama3", ignoreMerges: true},
	"llama-v3":         {rules: "llama3", ignoreMerges: true},
	"llama-bpe":        {rules: "llama3", ignoreMerges: true},
	"falcon3":          {rules: "llama3", ignoreMerges: true},
	"deepseek-llm":     {rules: "deepseek-llm"},
	"deepseek-coder":   {rules: "deepseek-coder"},
	"deepseek-v3":      {rules: "deepseek-v3"},
	"falcon":           {rules: "falcon"},
	"mpt":              {rules: "gpt2"},
	"starcoder":        {rules: "starcoder"},
	"gpt-2":            {rules: "gpt2"},
	"phi-2":            {rules: "gpt2"},
	"jina-es":          {rules: "gpt2"},
	"jina-de":          {rules: "gpt2"},
	"jina-v1-en":       {rules: "gpt2"},
	"jina-v2-es":       {rules: "gpt2"},
	"jina-v2-de":       {rules: "gpt2"},
	"jina-v2-code":     {rules: "gpt2"},
	"gigachat":         {rules: "gpt2"},
	"roberta-bpe":      {rules: "gpt2"},
	"refact":           {rules: "starcoder"},
	"command-r":        {rules: "starcoder"},
	"qwen2":            {rules: "qwen2"},
	"deepseek-r1-qwen": {rules: "qwen2"},
	"stablelm2":        {rules: "qwen2"},
	"olmo":             {rules: "gpt2"},
	"dbrx":             {rules: "llama3"},
	"smaug-bpe":        {rules: "llama3"},
	"poro-chat":        {rules: "bloom"},
	"chatglm-bpe":      {rules: "chatglm4"},
	"viking":           {rules: "viking"},
	"jais":             {rules: "gpt2"},
	"tekken":           {rules: "tekken", ignoreMerges: true},
	"smollm":           {rules: "starcoder"},
	"codeshell":        {rules: "starcoder"},
	"bloom":            {rules: "bloom"},
	"gpt3-finnish":     {rules: "bloom"},
	"exaone":           {rules: "starcoder"},
	"chameleon":        {rules: "chameleon"},
	"minerva-7b":       {rules: "starcoder"},
	"megrez":           {rules: "qwen2"},
}

type preInfo struct {
	rules string
	// ignoreMerges: a whole pre-tokenized word that is itself a token is
	// emitted as that token without running merges (llama.cpp
	// tokenizer_ignore_merges, set for llama3 and tekken).
	ignoreMerges bool
}

// PreTokenizers lists the tokenizer.ggml.pre names this package supports,
// sorted.
func PreTokenizers() []string {
	names := make([]string, 0, len(preNames))
	for n := range preNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// preTokenizer splits text into words by a sequence of patterns.
type preTokenizer struct {
	name string
	info preInfo
	res  []*regexp2.Regexp
}

// compiled caches compiled rule sets; regexp2 values are safe for
// concurrent use.
var compiled = map[string][]*regexp2.Regexp{}

func init() {
	for name, pats := range preRules {
		for _, p := range pats {
			compiled[name] = append(compiled[name], regexp2.MustCompile(p))
		}
	}
}

// newPreTokenizer resolves a tokenizer.ggml.pre value. An empty name means
// "default" (llama.cpp warns and does the same).
func newPreTokenizer(name string) (*preTokenizer, error) {
	key := name
	if key == "" {
		key = "default"
	}
	info, ok := preNames[key]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownPreTokenizer, name)
	}
	return &preTokenizer{name: key, info: info, res: compiled[info.rules]}, nil
}

// split returns the words of text in order; their concatenation is text.
func (p *preTokenizer) split(text string) []string {
	var out []string
	p.each(text, unlimited(), func(w string) bool { out = append(out, w); return true })
	return out
}

// each calls f with the words of text in order, their concatenation being
// text, until f returns false. Words come as they are found: each pattern
// splits a piece of the previous stage into its matches and the text
// between them, depth first and one match at a time, so a caller that
// stops early has paid only for the words it took (plus one pass turning
// the text into runes). Every piece of every stage counts in l.pieces.
// Positions are tracked in bytes, so invalid UTF-8 survives unchanged.
func (p *preTokenizer) each(text string, l *limit, f func(string) bool) {
	if text == "" {
		return
	}
	bufs := make([]stageBuf, len(p.res))
	p.stage(text, 0, 0, len(text), bufs, l, f)
}

// stageBuf is one stage's runes of its current piece and their byte
// offsets (plus the end). A stage's buffer is reused for each of its
// pieces: a piece is done before the next one starts.
type stageBuf struct {
	runes []rune
	offs  []int
}

// stage splits text[lo:hi] by pattern k and passes each part on to the
// next stage, or to f after the last; false when f asked to stop.
func (p *preTokenizer) stage(text string, k, lo, hi int, bufs []stageBuf, l *limit, f func(string) bool) bool {
	l.pieces++
	if k == len(p.res) {
		return f(text[lo:hi])
	}
	b := &bufs[k]
	b.runes, b.offs = b.runes[:0], b.offs[:0]
	for i := lo; i < hi; {
		r, n := utf8.DecodeRuneInString(text[i:hi])
		b.runes = append(b.runes, r)
		b.offs = append(b.offs, i)
		i += n
	}
	b.offs = append(b.offs, hi)
	next := func(from, to int) bool { return p.stage(text, k+1, b.offs[from], b.offs[to], bufs, l, f) }
	re := p.res[k]
	at := 0
	m, err := re.FindRunesMatch(b.runes)
	for ; err == nil && m != nil; m, err = re.FindNextMatch(m) {
		start, end := m.RuneIndex, m.RuneIndex+m.RuneLength
		if start > at && !next(at, start) {
			return false
		}
		if end > start && !next(start, end) {
			return false
		}
		at = end
	}
	// An error (only a backtracking-stack overflow can fail) keeps the
	// rest of the piece whole rather than lose text.
	if at < len(b.runes) {
		return next(at, len(b.runes))
	}
	return true
}
