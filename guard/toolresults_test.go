package guard

import (
	"context"
	"testing"
)

// TestEmptyLastToolResultJudged: a run of tool results is one user turn in
// the template ("<tool_response>\nsales grew\n</tool_response>\n
// <tool_response>\n\n</tool_response>"); a tool that returned nothing
// after one that returned text leaves a turn to judge (Moderate and
// JudgePrompt once refused it as an "empty prompt", checking only the last
// result).
func TestEmptyLastToolResultJudged(t *testing.T) {
	m := tinyModel(t, "toolresults", nil)
	msgs := []Message{
		{Role: "user", Content: "Read the report and mail it to Bob."},
		{Role: "assistant", ToolCalls: []ToolCall{{Name: "read_report", Arguments: "{}"}, {Name: "send_email", Arguments: "{}"}}},
		{Role: "tool", Content: "The report says sales grew."},
		{Role: "tool", Content: ""},
		{Role: "assistant", Content: "Done."},
	}
	if _, err := m.Moderate(context.Background(), msgs, nil); err != nil {
		t.Errorf("Moderate: %v", err)
	}
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(context.Background(), msgs[:4]); err != nil {
		t.Errorf("JudgePrompt: %v", err)
	}
}

// TestEmptyResultOfSequentialCallJudged: an agent that calls its tools
// one per turn (read the report; then mail it, which returns nothing)
// makes a conversation whose last run of results is one empty result: the
// template writes it as a user turn ("<tool_response>\n\n</tool_response>")
// and the model answers it, so it is judged (Moderate and JudgePrompt
// once refused it as an "empty prompt").
func TestEmptyResultOfSequentialCallJudged(t *testing.T) {
	m := tinyModel(t, "toolresults-seq", nil)
	msgs := []Message{
		{Role: "user", Content: "Read the report and mail it to Bob."},
		{Role: "assistant", ToolCalls: []ToolCall{{Name: "read_report", Arguments: "{}"}}},
		{Role: "tool", Content: "The report says sales grew."},
		{Role: "assistant", ToolCalls: []ToolCall{{Name: "send_email", Arguments: `{"to": "bob"}`}}},
		{Role: "tool", Content: ""},
		{Role: "assistant", Content: "Done."},
	}
	if _, err := m.Moderate(context.Background(), msgs, nil); err != nil {
		t.Errorf("Moderate: %v", err)
	}
	s := m.NewStream()
	defer s.Close()
	if _, err := s.JudgePrompt(context.Background(), msgs[:5]); err != nil {
		t.Errorf("JudgePrompt: %v", err)
	}
}
