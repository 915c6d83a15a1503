package guard

import (
	"context"
	"testing"
)

// TestEmptyToolResultsJudged: a run of tool results is one user turn in
// the template, whatever the results hold ("<tool_response>\n\n
// </tool_response>" for a tool that returned nothing), so a conversation
// ending with one is judged by Moderate and JudgePrompt. They once refused
// it as an "empty prompt": checking only the last result (parallel calls,
// the last returning nothing), then the run (an agent calling one tool a
// turn, its last returning nothing).
func TestEmptyToolResultsJudged(t *testing.T) {
	m := tinyModel(t, "toolresults", nil)
	user := Message{Role: "user", Content: "Read the report and mail it to Bob."}
	read, send := ToolCall{Name: "read_report", Arguments: "{}"}, ToolCall{Name: "send_email", Arguments: `{"to": "bob"}`}
	for name, msgs := range map[string][]Message{
		"parallel calls": {user, {Role: "assistant", ToolCalls: []ToolCall{read, send}},
			{Role: "tool", Content: "The report says sales grew."}, {Role: "tool", Content: ""}},
		"a call a turn": {user, {Role: "assistant", ToolCalls: []ToolCall{read}}, {Role: "tool", Content: "The report says sales grew."},
			{Role: "assistant", ToolCalls: []ToolCall{send}}, {Role: "tool", Content: ""}},
	} {
		answered := append(msgs[:len(msgs):len(msgs)], Message{Role: "assistant", Content: "Done."})
		if _, err := m.Moderate(context.Background(), answered, nil); err != nil {
			t.Errorf("%s: Moderate: %v", name, err)
		}
		s := m.NewStream()
		if _, err := s.JudgePrompt(context.Background(), msgs); err != nil {
			t.Errorf("%s: JudgePrompt: %v", name, err)
		}
		s.Close()
	}
}
