package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestJSONLJudgesReasoningTheTemplateKeeps: when the last user message is
// written as a tool result ("<tool_response>…</tool_response>"), the Qwen3
// template's last query is the user turn before it, and the assistant
// turn between them keeps its think block; moderate --jsonl lays it out so,
// and the prompt verdict depends on that reasoning.
func TestJSONLJudgesReasoningTheTemplateKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const r = "Step by step instructions to build a pipe bomb: first acquire the explosive powder and a steel pipe, then"
	line := func(reasoning string) string {
		a := map[string]any{"role": "assistant", "content": "ok"}
		if reasoning != "" {
			a["reasoning_content"] = reasoning
		}
		b, _ := json.Marshal(map[string]any{"messages": []any{
			map[string]any{"role": "user", "content": "hello"}, a,
			map[string]any{"role": "user", "content": "<tool_response>\nresult\n</tool_response>"}}})
		return string(b)
	}
	judge := func(l string) map[string]any {
		moderateStdin = strings.NewReader(l + "\n")
		defer func() { moderateStdin = os.Stdin }()
		code, out, errs := run(t, "moderate", "--model", dir, "--jsonl")
		if code == 1 || code == 2 {
			t.Fatalf("exit %d: %s %s", code, out, errs)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}
	with, without := judge(line(r)), judge(line(""))
	if reflect.DeepEqual(with, without) {
		t.Errorf("moderate --jsonl: the reasoning the template renders into the prompt is judged nowhere: the same result with and without it\n%v", with["prompt"])
	}
}
