package tokenizer

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"

	"github.com/kvcache/kvcache/pkg/gguf"
)

// ErrTemplate means a chat template could not be compiled or rendered for
// the given messages (a syntax error, or the template's own
// raise_exception, e.g. "Conversation roles must alternate"). It is the
// client's request that the template rejects: servers answer 400.
var ErrTemplate = errors.New("tokenizer: chat template")

// Jinja is a chat template from a model's tokenizer.chat_template, rendered
// by a Jinja engine made for chat templates (github.com/ardanlabs/jinja)
// with the variables Hugging Face's apply_chat_template provides:
// messages, add_generation_prompt, bos_token and eos_token.
type Jinja struct {
	src      string
	tmpl     *jinja.Template
	bos, eos string
}

// NewJinja compiles src; bosToken and eosToken are the texts of the
// tokenizer's BOS and EOS tokens ("" if none).
func NewJinja(src, bosToken, eosToken string) (*Jinja, error) {
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return &Jinja{src: src, tmpl: t, bos: bosToken, eos: eosToken}, nil
}

// Name implements Template.
func (j *Jinja) Name() string { return "jinja" }

// Source returns the template text.
func (j *Jinja) Source() string { return j.src }

// Render implements Template. Errors wrap ErrTemplate.
func (j *Jinja) Render(msgs []Message, addGenerationPrompt bool) (string, error) {
	ms := make([]any, len(msgs))
	for i, m := range msgs {
		ms[i] = map[string]any{"role": m.Role, "content": m.Content}
	}
	out, err := j.tmpl.Render(map[string]any{
		"messages":              ms,
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             j.bos,
		"eos_token":             j.eos,
	})
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	return out, nil
}

// turnEnds are end-of-turn markers of common template families.
var turnEnds = []string{"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|END_OF_TURN_TOKEN|>", "<|endoftext|>"}

// Stop implements Template: the end-of-turn markers the template writes,
// and the EOS text.
func (j *Jinja) Stop() []string {
	var out []string
	for _, s := range turnEnds {
		if strings.Contains(j.src, s) {
			out = append(out, s)
		}
	}
	if j.eos != "" && !contains(out, j.eos) {
		out = append(out, j.eos)
	}
	return out
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TemplateFromGGUF returns the chat template of a model file: its
// tokenizer.chat_template rendered as Jinja when present, with bos_token
// and eos_token taken from tok. Without one it returns DetectTemplate("")
// (the plain fallback). A template that does not compile falls back to
// DetectTemplate's built-in match and reports why through warn (nil
// discards it): the model stays usable with the closest built-in format.
func TemplateFromGGUF(f *gguf.File, tok Tokenizer, warn func(string)) Template {
	src, err := f.String("tokenizer.chat_template")
	if err != nil || src == "" {
		return DetectTemplate("")
	}
	for _, b := range builtins {
		if src == b.src || src == b.legacy {
			return b.t
		}
	}
	j, err := NewJinja(src, TokenText(tok, tok.BOS()), TokenText(tok, tok.EOS()))
	if err != nil {
		fb := DetectTemplate(src)
		if warn != nil {
			warn(fmt.Sprintf("%v; using the built-in %q template", err, fb.Name()))
		}
		return fb
	}
	return j
}

// TokenText returns the vocabulary text of id ("" for invalid ids or
// tokenizers that do not expose it).
func TokenText(t Tokenizer, id int) string {
	if tt, ok := t.(interface{ TokenText(int) string }); ok && id >= 0 {
		return tt.TokenText(id)
	}
	return ""
}

// builtins are the built-in templates with Jinja sources that render
// exactly like them (what a GGUF written for the embedded model carries),
// and the marker strings earlier versions wrote instead.
var builtins = []struct {
	t           Template
	src, legacy string
}{
	{Llama3{}, "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}", "{{ '<|start_header_id|>' }}"},
	{ChatML{}, "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}", "{{ '<|im_start|>' }}"},
	{Plain{}, "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}", ""},
}

// BuiltinSource returns the Jinja source of a built-in template, which
// TemplateFromGGUF maps back to it; "" for other templates.
func BuiltinSource(t Template) string {
	for _, b := range builtins {
		if b.t.Name() == t.Name() {
			return b.src
		}
	}
	return ""
}
