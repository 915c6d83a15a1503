package chatmsg

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// conversationOf reads OpenAI messages (JSON) as the server and the proxy
// read them.
func conversationOf(t *testing.T, js string) []tokenizer.Message {
	t.Helper()
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(js), &raws); err != nil {
		t.Fatal(err)
	}
	var sk Skipped
	turns, err := Conversation(raws, &sk)
	if err != nil {
		t.Fatal(err)
	}
	return turns
}

// TestTemplateToolTagsInPrompt: the tool scaffold the Qwen3 template
// writes — <tool_call>, </tool_call>, <tool_response>, </tool_response> —
// reaches the guard as the added tokens 151657/151658/151665/151666 that
// Hugging Face's tokenizer makes of the template's output, as the model
// read them in training (they were once written as ordinary text, "<",
// "tool", "_call", ">": the same decoded text, other ids).
//
// Expected text: @huggingface/jinja 0.5.13's rendering (identical to Python
// jinja2 3.1.6 in transformers' sandbox settings) of the chat_template in
// qwen3data/tokenizer_config.json, add_generation_prompt=false,
// enable_thinking=false, messages: user "weather?"; assistant content ""
// with tool_calls [get_weather, arguments "{\"city\": \"Paris\"}"]; tool
// "sunny"; user "thanks". The guard's prompt ends at the last <|im_end|>.
func TestTemplateToolTagsInPrompt(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	const template = "<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>user\nthanks<|im_end|>\n"
	msgs := conversationOf(t, `[
		{"role": "user", "content": "weather?"},
		{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
		{"role": "tool", "tool_call_id": "c1", "content": "sunny"},
		{"role": "user", "content": "thanks"}]`)
	c, err := tok.RenderConversation(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tok.Decode(c.Prompt(), false), strings.TrimSuffix(template, "\n"); got != want {
		t.Fatalf("text differs:\n got %q\nwant %q", got, want)
	}
	// Hugging Face encodes the template's text with its added tokens matched.
	want := tok.Encode(strings.TrimSuffix(template, "\n"))
	for _, id := range []int{tokenizer.ToolCallStart, tokenizer.ToolCallEnd, tokenizer.ToolResponseStart, tokenizer.ToolResponseEnd} {
		if !slices.Contains(want, id) {
			t.Fatalf("reference encoding lacks %d", id)
		}
		if !slices.Contains(c.Prompt(), id) {
			t.Errorf("guard prompt lacks added token %d (%q): the template's tool scaffold is encoded as text", id, tok.Decode([]int{id}, false))
		}
	}
	if !slices.Equal(c.Prompt(), want) {
		t.Errorf("guard prompt ids (%d) differ from the template's (%d)", len(c.Prompt()), len(want))
	}
}

// TestTemplateToolTagsInResponse: an answer that is a tool call is judged
// from the single token <tool_call> (151657) right after the response
// header, as the template (and the model that produced it) has it.
//
// Expected text: @huggingface/jinja's rendering of the embedded template
// (add_generation_prompt=false, enable_thinking=false), messages: user
// "weather?"; assistant content "" with tool_calls [get_weather,
// arguments "{\"city\": \"Paris\"}"].
func TestTemplateToolTagsInResponse(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	const template = "<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"
	msgs := conversationOf(t, `[
		{"role": "user", "content": "weather?"},
		{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]`)
	c, err := tok.RenderConversation(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Decode(c.IDs, false); got != template {
		t.Fatalf("text differs:\n got %q\nwant %q", got, template)
	}
	if j := c.Judged(); len(j) == 0 || j[0] != tokenizer.ToolCallStart {
		t.Errorf("first judged id %v (%q), want <tool_call> %d as the template's encoding has it", j[:min(4, len(j))], tok.Decode(j[:min(4, len(j))], false), tokenizer.ToolCallStart)
	}
	if want := tok.Encode(template); !slices.Equal(c.IDs, want) {
		t.Errorf("guard ids (%d) differ from the template's (%d)", len(c.IDs), len(want))
	}
}

// TestTemplateNewlineBeforeToolCall: an answer whose content is
// only newlines ("\n\n", as models answer beside a tool call) with a tool
// call. The template strips the content's leading newlines but still
// writes the "\n" that separates content from the first call (the content
// is not empty), so the model reads "</think>\n\n\n<tool_call>", as the
// guard does (it once stripped the separator too). Same with reasoning.
//
// Expected text: @huggingface/jinja's (and Python jinja2's) rendering of
// the embedded template, add_generation_prompt=false,
// enable_thinking=false, messages: user "weather?"; assistant content
// "\n\n" (and, second case, reasoning_content "R") with tool_calls
// [get_weather, arguments "{\"city\": \"Paris\"}"].
func TestTemplateNewlineBeforeToolCall(t *testing.T) {
	tok, err := tokenizer.LoadQwen3()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ rc, template string }{
		{"", "<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"},
		{"R", "<|im_start|>user\nweather?<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n"},
	} {
		msgs := conversationOf(t, `[
		{"role": "user", "content": "weather?"},
		{"role": "assistant", "content": "\n\n", "reasoning_content": "`+c.rc+`", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}]`)
		conv, err := tok.RenderConversation(msgs)
		if err != nil {
			t.Fatal(err)
		}
		if got := tok.Decode(conv.IDs, false); got != c.template {
			t.Errorf("reasoning %q:\n got %q\nwant %q", c.rc, got, c.template)
		}
	}
}
