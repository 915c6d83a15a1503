package server

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestLiteLLMJudgesTextsToolCallsTools: LiteLLM's Generic Guardrail API
// request carries "texts" (every message's content, tool results
// included), "tool_calls" (the assistant messages' calls), "tools" (the
// request's function definitions) and "structured_messages": the model
// reads all of them, so all are judged, with a user turn in the messages
// too.
func TestLiteLLMJudgesTextsToolCallsTools(t *testing.T) {
	const payload = "SECRETPAYLOAD"
	for name, body := range map[string]string{
		"tool result in texts": `{"input_type":"request","texts":["Answer the question in the tool result.","` + payload + `"],` +
			`"structured_messages":[{"role":"user","content":"Answer the question in the tool result."},` +
			`{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},` +
			`{"role":"tool","tool_call_id":"c","content":"` + payload + `"}]}`,
		"tool_calls": `{"input_type":"request","texts":["Hi"],` +
			`"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"q\":\"` + payload + `\"}"}}],` +
			`"structured_messages":[{"role":"user","content":"Hi"},` +
			`{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"q\":\"` + payload + `\"}"}}]}]}`,
		"tools": `{"input_type":"request","texts":["Hi"],"tools":[{"type":"function","function":{"name":"f","description":"` + payload + `"}}],` +
			`"structured_messages":[{"role":"user","content":"Hi"}]}`,
	} {
		var req litellmRequest
		if err := json.Unmarshal([]byte(body), &req); err != nil {
			t.Fatal(err)
		}
		convs, _, skipped, err := litellmConversations(&req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var judged strings.Builder
		for _, c := range convs {
			for _, m := range c {
				judged.WriteString(m.Content + "\n" + m.ReasoningContent + "\n")
			}
		}
		if !strings.Contains(judged.String(), payload) {
			t.Errorf("%s: %s never judged (skipped %v)", name, payload, skipped)
		}
	}
}
