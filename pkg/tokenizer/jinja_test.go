package tokenizer

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The real chat templates of five model families (testdata/templates, as
// published in their tokenizer_config.json) render byte for byte the
// prompts their model cards document.
func TestJinjaModelTemplates(t *testing.T) {
	sysUser := []Message{{"system", "You are a helpful assistant."}, {"user", "Hello"}}
	turns := []Message{{"user", "Hello"}, {"assistant", "Hi there"}, {"user", "How are you?"}}
	tests := []struct {
		file, bos, eos string
		msgs           []Message
		want           string
	}{
		{"llama3.jinja", "<|begin_of_text|>", "<|end_of_text|>", sysUser,
			"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"llama3.jinja", "<|begin_of_text|>", "<|end_of_text|>", []Message{{"user", "  padded \n"}},
			"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\npadded<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
		{"qwen2.5.jinja", "", "<|im_end|>", sysUser,
			"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5.jinja", "", "<|im_end|>", sysUser[1:],
			"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"},
		{"qwen2.5.jinja", "", "<|im_end|>", turns,
			"<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"},
		{"mistral.jinja", "<s>", "</s>", turns,
			"<s>[INST] Hello [/INST]Hi there</s>[INST] How are you? [/INST]"},
		{"phi3.jinja", "<s>", "<|endoftext|>", sysUser,
			"<s><|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n"},
		{"gemma.jinja", "<bos>", "<eos>", turns,
			"<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\nHi there<end_of_turn>\n<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"},
	}
	for _, tc := range tests {
		j := loadTemplate(t, tc.file, tc.bos, tc.eos)
		got, err := j.Render(tc.msgs, true)
		if err != nil {
			t.Errorf("%s: %v", tc.file, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s:\n got  %q\n want %q", tc.file, got, tc.want)
		}
	}
}

// Templates that reject a conversation give ErrTemplate with their message.
func TestJinjaTemplateErrors(t *testing.T) {
	tests := []struct {
		file string
		msgs []Message
		want string
	}{
		{"mistral.jinja", []Message{{"system", "S"}, {"user", "U"}}, "Conversation roles must alternate"},
		{"mistral.jinja", []Message{{"user", "U"}, {"user", "U"}}, "Conversation roles must alternate"},
		{"gemma.jinja", []Message{{"system", "S"}, {"user", "U"}}, "System role not supported"},
	}
	for _, tc := range tests {
		_, err := loadTemplate(t, tc.file, "<s>", "</s>").Render(tc.msgs, true)
		if !errors.Is(err, ErrTemplate) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: err = %v, want ErrTemplate with %q", tc.file, tc.msgs, err, tc.want)
		}
	}
	if _, err := NewJinja("{% for x in %}", "", ""); !errors.Is(err, ErrTemplate) {
		t.Errorf("syntax error: err = %v", err)
	}
}

// Each built-in template's Jinja source renders exactly as the built-in.
func TestBuiltinSources(t *testing.T) {
	msgs := []Message{{"system", " Be brief. "}, {"user", "Hi"}, {"assistant", "Hello!"}, {"user", "x"}}
	for _, b := range []Template{Llama3{}, ChatML{}, Plain{}} {
		j, err := NewJinja(BuiltinSource(b), "", "")
		if err != nil {
			t.Fatalf("%s: %v", b.Name(), err)
		}
		for _, gen := range []bool{false, true} {
			want, _ := b.Render(msgs, gen)
			if got, err := j.Render(msgs, gen); err != nil || got != want {
				t.Errorf("%s gen=%v: jinja %q (%v), built-in %q", b.Name(), gen, got, err, want)
			}
		}
	}
}

func loadTemplate(t *testing.T, file, bos, eos string) *Jinja {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "templates", file))
	if err != nil {
		t.Fatal(err)
	}
	j, err := NewJinja(string(src), bos, eos)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return j
}
