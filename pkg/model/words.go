package model

import (
	"sort"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/kvcache/kvcache/pkg/tokenizer"
)

// The embedded default model's vocabulary: a byte-level BPE ("gpt2"
// tokenizer model) whose merges spell a fixed list of common English words
// and word pieces, each also with a leading space. All 256 bytes are
// tokens, so any text (any bytes) encodes and decodes back exactly; the
// synthetic output projection damps every token but the whole words with
// a leading space and a few punctuation marks, so what the random weights
// generate is printable words, not bytes (see Synthetic).

// wordList is the fixed list the vocabulary spells. Changing it changes the
// default model (its vocabulary size, hence every weight and the cache
// namespace).
const wordList = `
the of and to in is it you that he was for on are with as his they be at one
have this from or had by not word but what some we can out other were all there
when up use your how said an each she which do their time if will way about many
then them write would like so these her long make thing see him two has look more
day could go come did number sound no most people my over know water than call
first who may down side been now find any new work part take get place made live
where after back little only round man year came show every good me give our under
name very through just form sentence great think say help low line differ turn
cause much mean before move right boy old too same tell does set three want air
well also play small end put home read hand port large spell add even land here
must big high such follow act why ask men change went light kind off need house
picture try us again animal point mother world near build self earth father head
stand own page should country found answer school grow study still learn plant
cover food sun four between state keep eye never last let thought city tree cross
farm hard start might story saw far sea draw left late run while press close
night real life few north open seem together next white children begin got walk
example ease paper group always music those both mark often letter until mile
river car feet care second book carry took science eat room friend began idea fish
mountain stop once base hear horse cut sure watch color face wood main enough
plain girl usual young ready above ever red list though feel talk bird soon body
dog family direct pose leave song measure door product black short numeral class
wind question happen complete ship area half rock order fire south problem piece
told knew pass since top whole king space heard best hour better true during
hundred five remember step early hold west ground interest reach fast verb sing
listen six table travel less morning ten simple several vowel toward war lay
against pattern slow center love person money serve appear road map rain rule
govern pull cold notice voice unit power town fine certain fly fall lead cry dark
machine note wait plan figure star box noun field rest correct able pound done
beauty drive stood contain front teach week final gave green oh quick develop
ocean warm free minute strong special mind behind clear tail produce fact street
inch multiply nothing course stay wheel full force blue object decide surface deep
moon island foot system busy test record boat common gold possible plane stead dry
wonder laugh thousand ago ran check game shape equate hot miss brought heat snow
tire bring yes distant fill east paint language among cache block token model
prompt prefix node worker request memory key value fast data
`

// capitalList are words the vocabulary also holds capitalized (sentence
// starts).
const capitalList = `the it he she they we you this there when what how one i a
in on if then after before every some most many`

// suffixList are pieces that continue a word (no leading space).
const suffixList = `s es ed ing er est ly tion ment ness able al ful less ous ive`

// punctList are punctuation pieces; with the words that start with a space
// they are the tokens the output projection leaves undamped.
const punctList = `. , ? ! ; : ." ,"`

// Control tokens of the word-piece vocabulary, ids 256.. as in
// tokenizer.Bytes, so the ChatML template works unchanged.
var wordControls = []string{"<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"}

// wordVocab holds the built vocabulary: the tokenizer, and for each id
// whether the synthetic output projection leaves its row undamped.
type wordVocab struct {
	tok    *tokenizer.BPE
	vocab  tokenizer.Vocab
	output []bool
}

var wordsOnce = sync.OnceValue(buildWordVocab)

// gpt2Runes maps bytes to the GPT-2 bytes-to-unicode alphabet BPE
// vocabularies are written in: printable Latin-1 bytes stand for
// themselves, the others for 256+n in byte order.
func gpt2Runes() [256]rune {
	var br [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			br[b] = rune(b)
		} else {
			br[b] = rune(256 + n)
			n++
		}
	}
	return br
}

func buildWordVocab() wordVocab {
	br := gpt2Runes()
	enc := func(s string) string {
		var sb strings.Builder
		for i := 0; i < len(s); i++ {
			sb.WriteRune(br[s[i]])
		}
		return sb.String()
	}
	tokens := make([]string, 0, 4096)
	types := make([]int32, 0, 4096)
	for b := 0; b < 256; b++ {
		tokens = append(tokens, enc(string([]byte{byte(b)})))
		types = append(types, tokenizer.TypeNormal)
	}
	for _, c := range wordControls {
		tokens = append(tokens, c)
		types = append(types, tokenizer.TypeControl)
	}
	output := make([]bool, len(tokens))

	// Whole pieces, in a fixed order, deduplicated.
	seen := map[string]bool{}
	var pieces []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			pieces = append(pieces, p)
		}
	}
	for _, w := range strings.Fields(wordList) {
		add(" " + w)
		add(w)
	}
	for _, w := range strings.Fields(capitalList) {
		w = strings.ToUpper(w[:1]) + w[1:]
		add(" " + w)
		add(w)
	}
	for _, w := range strings.Fields(suffixList) {
		add(w)
	}
	for _, w := range strings.Fields(punctList) {
		add(w)
	}
	// The output projection favours whole words with their leading space,
	// and punctuation, so generated text reads as words between spaces.
	whole := map[string]bool{}
	for _, p := range pieces {
		whole[p] = p[0] == ' '
	}
	for _, p := range strings.Fields(punctList) {
		whole[p] = true
	}

	// Every prefix of a piece is a token, built by one merge "prefix
	// char" (the left-to-right spelling). Merges that make longer tokens
	// rank first, so a word's first merge grows into the whole piece
	// before another merge starts inside it; among the shortest, pieces
	// starting with a space go first.
	ids := map[string]int{}
	for i, t := range tokens {
		ids[t] = i
	}
	type merge struct {
		left, right, out string
		n                int // bytes of out
		space            bool
	}
	var merges []merge
	for _, p := range pieces {
		for end := 1; end < len(p); end++ {
			out := enc(p[:end+1])
			if _, ok := ids[out]; ok {
				continue
			}
			ids[out] = len(tokens)
			tokens = append(tokens, out)
			types = append(types, tokenizer.TypeNormal)
			output = append(output, false)
			merges = append(merges, merge{left: enc(p[:end]), right: enc(p[end : end+1]), out: out, n: end + 1, space: p[0] == ' '})
		}
	}
	for p, ok := range whole {
		output[ids[enc(p)]] = ok
	}
	sort.SliceStable(merges, func(i, j int) bool {
		if merges[i].n != merges[j].n {
			return merges[i].n > merges[j].n
		}
		return merges[i].space && !merges[j].space
	})
	v := tokenizer.Vocab{
		Tokens: tokens,
		Types:  types,
		BOS:    tokenizer.ByteBOS,
		EOS:    tokenizer.ByteEOS,
		UNK:    -1,
		Pre:    "gpt-2",
	}
	for _, m := range merges {
		v.Merges = append(v.Merges, m.left+" "+m.right)
	}
	tok, err := tokenizer.NewBPE(v)
	if err != nil {
		panic(err) // the lists above are valid by construction
	}
	if !utf8.ValidString(strings.Join(pieces, "")) {
		panic("model: word list is not UTF-8")
	}
	return wordVocab{tok: tok, vocab: v, output: output}
}

// WordTokenizer returns the tokenizer of the embedded default model: a
// byte-level BPE over common English word pieces (with leading-space
// variants), all 256 bytes as fallback, and the control tokens <|bos|>,
// <|eos|>, <|im_start|> and <|im_end|> at ids 256 to 259. Built once; it
// needs no weights, so tools can count the default model's tokens cheaply.
func WordTokenizer() *tokenizer.BPE { return wordsOnce().tok }
