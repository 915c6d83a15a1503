package server

import (
	"testing"
)

// TestModerationsEmptyLastToolResult: an agent's conversation whose last
// tool result is empty (a tool that returns nothing, e.g. send_email,
// after one that returned text) is judged by POST /v1/moderations: the run
// of results, one user turn in the template, has text (a blank last
// result once made the tool results' stream an "empty prompt", 400).
func TestModerationsEmptyLastToolResult(t *testing.T) {
	h := newHarness(t, Options{})
	call := func(id, name string) map[string]any {
		return map[string]any{"id": id, "type": "function", "function": map[string]any{"name": name, "arguments": "{}"}}
	}
	conv := []map[string]any{
		{"role": "user", "content": "Look up the report and mail it to Bob."},
		{"role": "assistant", "content": nil, "tool_calls": []any{call("c1", "read_report"), call("c2", "send_email")}},
		{"role": "tool", "tool_call_id": "c1", "content": "The report says sales grew."},
		{"role": "tool", "tool_call_id": "c2", "content": ""},
		{"role": "assistant", "content": "Done."},
	}
	var out map[string]any
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": map[string]any{"messages": conv}}, &out); code != 200 {
		t.Fatalf("status %d: %v", code, out)
	}
}
