package worker

import (
	"math"
	"sort"
)

// MaxTopLogprobs bounds top_logprobs (chat) and logprobs (completions):
// OpenAI allows 20 for chat (5 for completions; we accept 20 on both).
const MaxTopLogprobs = 20

// TokenLogprob is one generated token's log probability under the model
// (the log-softmax of its raw logits, before temperature and top_p, as
// vLLM reports by default), with the Top most likely alternatives.
type TokenLogprob struct {
	Token   int
	Logprob float64
	Top     []TopLogprob // most likely first; len is the request's TopLogprobs
	// Start is the byte offset of the token's text in the choice's text.
	Start int
}

// TopLogprob is one candidate token and its log probability.
type TopLogprob struct {
	Token   int
	Logprob float64
}

// logprobOf returns the log probability of tok and the top k tokens.
func logprobOf(logits []float32, tok, k int) (float64, []TopLogprob) {
	m := math.Inf(-1)
	for _, v := range logits {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(sum)
	lp := func(i int) float64 { return float64(logits[i]) - lse }
	if k <= 0 {
		return lp(tok), nil
	}
	// Selection of the k largest in one pass: k is at most 20.
	top := make([]TopLogprob, 0, k+1)
	for i, v := range logits {
		if len(top) == k && float64(v) <= float64(logits[top[k-1].Token]) {
			continue
		}
		at := sort.Search(len(top), func(j int) bool { return logits[top[j].Token] < v })
		top = append(top, TopLogprob{})
		copy(top[at+1:], top[at:])
		top[at] = TopLogprob{Token: i}
		if len(top) > k {
			top = top[:k]
		}
	}
	for i := range top {
		top[i].Logprob = lp(top[i].Token)
	}
	return lp(tok), top
}
