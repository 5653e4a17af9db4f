package tokenizer

import "strings"

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user", "assistant", ...
	Content string
}

// Template renders chat messages into prompt text. Tokenize the result
// with EncodeChat, which keeps message content from being read as control
// tokens.
type Template interface {
	// Name identifies the template ("jinja", "llama3", "chatml", "plain").
	Name() string
	// Render renders msgs; with addGenerationPrompt it ends with the header
	// of an assistant turn, ready for generation. Errors wrap ErrTemplate
	// (a model's template may reject, e.g., a system message).
	Render(msgs []Message, addGenerationPrompt bool) (string, error)
	// Stop returns extra text markers (beyond EOS) that end an assistant turn.
	Stop() []string
}

// DetectTemplate picks a built-in template by looking for marker
// substrings in a Jinja chat template source: llama-3 headers, ChatML
// markers, otherwise the plain fallback. No Jinja is evaluated; models use
// TemplateFromGGUF, which renders their own template.
func DetectTemplate(src string) Template {
	switch {
	case strings.Contains(src, "<|start_header_id|>"):
		return Llama3{}
	case strings.Contains(src, "<|im_start|>"):
		return ChatML{}
	}
	return Plain{}
}

// Llama3 is the llama-3 instruct format.
type Llama3 struct{}

// Name implements Template.
func (Llama3) Name() string { return "llama3" }

// Stop implements Template.
func (Llama3) Stop() []string { return []string{"<|eot_id|>"} }

// Render implements Template; it never fails.
func (t Llama3) Render(msgs []Message, gen bool) (string, error) { return t.Apply(msgs, gen), nil }

// Apply renders msgs.
func (Llama3) Apply(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|start_header_id|>" + m.Role + "<|end_header_id|>\n\n" + strings.TrimSpace(m.Content) + "<|eot_id|>")
	}
	if gen {
		b.WriteString("<|start_header_id|>assistant<|end_header_id|>\n\n")
	}
	return b.String()
}

// ChatML is the <|im_start|>role ... <|im_end|> format.
type ChatML struct{}

// Name implements Template.
func (ChatML) Name() string { return "chatml" }

// Stop implements Template.
func (ChatML) Stop() []string { return []string{"<|im_end|>"} }

// Render implements Template; it never fails.
func (t ChatML) Render(msgs []Message, gen bool) (string, error) { return t.Apply(msgs, gen), nil }

// Apply renders msgs.
func (ChatML) Apply(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if gen {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String()
}

// Plain is the fallback "role: content" transcript format.
type Plain struct{}

// Name implements Template.
func (Plain) Name() string { return "plain" }

// Stop implements Template.
func (Plain) Stop() []string { return []string{"\nuser:"} }

// Render implements Template; it never fails.
func (t Plain) Render(msgs []Message, gen bool) (string, error) { return t.Apply(msgs, gen), nil }

// Apply renders msgs.
func (Plain) Apply(msgs []Message, gen bool) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(m.Role + ": " + m.Content + "\n")
	}
	if gen {
		b.WriteString("assistant:")
	}
	return b.String()
}
