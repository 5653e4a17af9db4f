package main

import (
	"fmt"
	"strings"

	"github.com/kvcache/kvcache/pkg/model"
)

// message is one chat message as the API takes it.
type message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// step is one request of the workload. Conversation steps add their user
// message to the running conversation (which already holds the system
// prompt and every earlier turn, answers included).
type step struct {
	Group        string // "system", "chat" or "doc": which shared prefix
	Label        string
	Messages     []message // the whole request, or the new user turn
	Conversation bool
}

// workload interleaves three shared-prefix patterns: one long system
// prompt shared by many questions, a multi-turn conversation on the same
// system prompt (each turn extends the previous prompt), and one long
// document asked several questions. Run alternately on two workers, the
// first request of each pattern is the only miss; the second runs on the
// other worker and hits the prefix the first computed.
func workload(systemTokens, docTokens int) []step {
	system := message{Role: "system", Content: text("system", systemTokens)}
	doc := text("doc", docTokens)
	sys := func(i int, q string) step {
		return step{Group: "system", Label: fmt.Sprintf("question %d", i), Messages: []message{system, {Role: "user", Content: q}}}
	}
	ask := func(i int, q string) step {
		return step{Group: "doc", Label: fmt.Sprintf("question %d", i), Messages: []message{{Role: "user", Content: "Read this document.\n\n" + doc + "\n\nQuestion: " + q}}}
	}
	turn := func(i int, q string) step {
		return step{Group: "chat", Label: fmt.Sprintf("turn %d", i), Messages: []message{{Role: "user", Content: q}}, Conversation: true}
	}
	return []step{
		sys(1, "How do I reset my password?"),
		sys(2, "What are your opening hours?"),
		ask(1, "Who wrote it?"),
		ask(2, "What is the main claim?"),
		turn(1, "Hello! I would like to plan a trip to the mountains next month."),
		sys(3, "Can I change my delivery address after ordering?"),
		ask(3, "Which numbers does it mention?"),
		turn(2, "We are two adults and a dog. Which region would you suggest?"),
		sys(4, "Do you ship to Norway?"),
		ask(4, "Summarise it in one sentence."),
		turn(3, "And what should we pack for cold nights?"),
		sys(5, "How do I cancel my subscription?"),
		turn(4, "Thanks. Can you make a short checklist of everything?"),
		sys(6, "Is there a student discount?"),
	}
}

// text returns deterministic English-like prose of about n tokens of the
// embedded model's tokenizer (model.WordTokenizer), what the workers run.
func text(seed string, n int) string {
	tok := model.WordTokenizer()
	ids := tok.Encode(prose(seed, 12*n)) // no token is 12 bytes long
	return strings.TrimSpace(tok.Decode(ids[:min(n, len(ids))]))
}

// prose returns deterministic English-like prose of about n bytes.
func prose(seed string, n int) string {
	words := strings.Fields(`the cache keeps every block of keys and values that a model computed
		for a prompt so that the next request with the same prefix can skip the prefill
		a worker asks the cluster for the longest cached prefix fetches it decodes it and
		computes only the rest which makes the first token arrive much sooner customers
		support policy order delivery account refund mountain river report figure table
		results method data shows quarter revenue growth team measured latency throughput`)
	x := uint32(2166136261)
	for _, c := range seed {
		x = (x ^ uint32(c)) * 16777619
	}
	var b strings.Builder
	sentence := 0
	for b.Len() < n {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		w := words[x%uint32(len(words))]
		if sentence == 0 {
			w = strings.ToUpper(w[:1]) + w[1:]
		}
		b.WriteString(w)
		sentence++
		if sentence > 8 && x%5 == 0 {
			b.WriteString(". ")
			sentence = 0
		} else {
			b.WriteByte(' ')
		}
	}
	return strings.TrimSpace(b.String()[:n])
}
