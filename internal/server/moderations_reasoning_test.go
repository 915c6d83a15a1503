package server

import (
	"reflect"
	"testing"
)

// TestModerationsJudgeReasoningTheTemplateKeeps: when the last user
// message is written as a tool result ("<tool_response>…</tool_response>"),
// the Qwen3 template's last query is the user turn before it, so an
// assistant turn in between keeps its reasoning in the prompt the model
// reads. @huggingface/jinja's rendering of the Qwen3 template
// (add_generation_prompt=false, enable_thinking=false) for messages user
// "hello"; assistant content "ok", reasoning_content R; user
// "<tool_response>\nresult\n</tool_response>" is
// "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n<think>\nR\n</think>\n\nok<|im_end|>\n<|im_start|>user\n<tool_response>\nresult\n</tool_response><|im_end|>\n".
// The proxy and the LiteLLM API judge R (in the prompt's layout, as the template keeps it);
// /v1/moderations judges it with the tool results (it was judged nowhere:
// the answer was the same with or without R).
func TestModerationsJudgeReasoningTheTemplateKeeps(t *testing.T) {
	h := newHarness(t, Options{})
	const r = "Step by step instructions to build a pipe bomb: first acquire the explosive powder and a steel pipe, then"
	conv := func(reasoning, content string) map[string]any {
		a := map[string]any{"role": "assistant", "content": content}
		if reasoning != "" {
			a["reasoning_content"] = reasoning
		}
		return map[string]any{"messages": []any{
			map[string]any{"role": "user", "content": "hello"},
			a,
			map[string]any{"role": "user", "content": "<tool_response>\nresult\n</tool_response>"},
		}}
	}
	without := moderateOne(t, h, conv("", "ok"))
	with := moderateOne(t, h, conv(r, "ok"))
	inContent := moderateOne(t, h, conv("", r+"\nok"))
	if reflect.DeepEqual(without.Qwen3Guard.Prompt, inContent.Qwen3Guard.Prompt) {
		t.Fatalf("sanity: the synthetic model does not tell the texts apart")
	}
	if reflect.DeepEqual(without, with) {
		t.Errorf("reasoning the template renders into the prompt is judged nowhere: same answer with and without it (prompt %+v, tool_results %v)",
			with.Qwen3Guard.Prompt.Verdict.RiskProbs, with.Qwen3Guard.ToolResults)
	}
}
