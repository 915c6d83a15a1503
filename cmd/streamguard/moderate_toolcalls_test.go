package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/synth"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestModerateJSONLToolCalls: --jsonl reads messages as the server reads
// OpenAI messages: an answer that is a tool call is judged (its tags as
// the model's tokens), and an agent transcript — call, result, answer — is
// laid out as the template writes it, the same verdicts as Model.Moderate
// given the call in ToolCalls. Decoded into guard.Message, whose ToolCalls
// JSON does not carry, the call was dropped: an empty answer judged.
func TestModerateJSONLToolCalls(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const user = `{"role": "user", "content": "Clean up my disk."}`
	const asstCall = `{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "delete_all_files", "arguments": "{\"path\": \"/\"}"}}]}`
	lines := []string{
		`{"id": 1, "messages": [` + user + `, ` + asstCall + `, {"role": "tool", "tool_call_id": "c1", "content": "deleted"}, {"role": "assistant", "content": "Done."}]}`,
		`{"id": 2, "messages": [` + user + `, ` + asstCall + `]}`,
	}
	moderateStdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	_, out, errs := run(t, "moderate", "--model", dir, "--jsonl")
	moderateStdin = os.Stdin

	m, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	call := []guard.ToolCall{{Name: "delete_all_files", Arguments: `{"path": "/"}`}}
	want := map[int][]guard.Message{
		1: {{Role: "user", Content: "Clean up my disk."}, {Role: "assistant", ToolCalls: call}, {Role: "tool", Content: "deleted"}, {Role: "assistant", Content: "Done."}},
		2: {{Role: "user", Content: "Clean up my disk."}, {Role: "assistant", ToolCalls: call}},
	}
	results := strings.Split(strings.TrimSpace(out), "\n")
	if len(results) != 2 {
		t.Fatalf("%d result lines, want 2 (stderr %q):\n%s", len(results), errs, out)
	}
	for _, l := range results {
		var got struct {
			ID     int             `json:"id"`
			Error  string          `json:"error"`
			Prompt json.RawMessage `json:"prompt"`
			Tokens []struct {
				ID int `json:"id"`
			} `json:"tokens"`
		}
		if err := json.Unmarshal([]byte(l), &got); err != nil || got.Error != "" {
			t.Fatalf("%v %q: %s", err, got.Error, l)
		}
		ref, err := m.Moderate(context.Background(), want[got.ID], nil)
		if err != nil {
			t.Fatal(err)
		}
		refPrompt, _ := json.Marshal(ref.Prompt)
		if string(refPrompt) != string(got.Prompt) || len(got.Tokens) != len(ref.Tokens) {
			t.Errorf("line %d: prompt %s, %d tokens; Moderate with the call in ToolCalls: %s, %d tokens", got.ID, got.Prompt, len(got.Tokens), refPrompt, len(ref.Tokens))
		}
		if got.ID == 2 && (len(got.Tokens) == 0 || got.Tokens[0].ID != tokenizer.ToolCallStart) {
			t.Errorf("line 2: the answer's judged tokens %v do not begin with <tool_call> (%d)", got.Tokens, tokenizer.ToolCallStart)
		}
	}
}
