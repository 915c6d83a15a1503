package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

func TestLiteLLM(t *testing.T) {
	m := testModel(t)
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0
	}
	cats := m.Info().Labels.ResponseCategory
	cfg := twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Debounce: 1, Thresholds: thr}                                                        // flags everything
		b.Policy = PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}} // flags nothing
	})
	h := newHarness(t, Options{Config: cfg})
	structured := []map[string]any{
		{"role": "system", "content": "be nice"},
		{"role": "user", "content": []map[string]any{{"type": "text", "text": testPrompt}}},
		{"role": "tool", "content": "42", "tool_call_id": "x"},
	}
	for _, tc := range []struct {
		key, want, reason string
		body              map[string]any
	}{
		{"key-a", "BLOCKED", "prompt flagged", map[string]any{"texts": []string{testPrompt}, "input_type": "request", "litellm_call_id": "c1", "request_data": map[string]any{"user_api_key_hash": "h"}}},
		{"key-a", "BLOCKED", "prompt flagged", map[string]any{"texts": []string{"x"}, "structured_messages": structured, "input_type": "request"}},
		{"key-a", "BLOCKED", "response flagged", map[string]any{"texts": []string{testResponse}, "structured_messages": structured, "input_type": "response"}},
		{"key-a", "BLOCKED", "prompt flagged", map[string]any{"texts": []string{testResponse}, "input_type": "response"}},
		{"key-b", "NONE", "", map[string]any{"texts": []string{testPrompt}, "input_type": "request"}},
		{"key-b", "NONE", "", map[string]any{"texts": []string{testResponse}, "structured_messages": structured, "input_type": "response"}},
		{"key-a", "NONE", "", map[string]any{"texts": []string{}, "images": []string{"aGk="}, "input_type": "request"}},
	} {
		var resp litellmResponse
		if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", tc.key, tc.body, &resp); code != 200 || resp.Action != tc.want || !strings.Contains(resp.BlockedReason, tc.reason) {
			t.Errorf("%s %v: status %d %+v, want %s %q", tc.key, tc.body, code, resp, tc.want, tc.reason)
		}
	}
	var e errBody
	if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a", map[string]any{"texts": []string{"x"}, "input_type": "sideways"}, &e); code != 400 {
		t.Fatalf("bad input_type: status %d", code)
	}
	if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "", map[string]any{"texts": []string{"x"}}, &e); code != 401 {
		t.Fatalf("no key: status %d", code)
	}
}

// Text after the last user turn of a request's messages (an assistant's
// words beside its tool call, a late system message) reaches the model, so
// it is judged as well: a second conversation, that text as one more user
// turn.
func TestLiteLLMTrailingText(t *testing.T) {
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	req := &litellmRequest{InputType: "request", StructuredMessages: []json.RawMessage{
		raw(`{"role": "user", "content": "hi"}`),
		raw(`{"role": "assistant", "content": "A1", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}`),
		raw(`{"role": "tool", "tool_call_id": "c", "content": "R"}`),
		raw(`{"role": "system", "content": "S"}`),
	}}
	convs, skipped, err := litellmConversations(req)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]tokenizer.Message{{{Role: "user", Content: "hi"}}, {{Role: "user", Content: "hi"}, {Role: "user", Content: "A1\nS"}}}
	if mustJSON(convs) != mustJSON(want) || mustJSON(skipped) != `["tool"]` {
		t.Errorf("conversations %s, skipped %v; want %s", mustJSON(convs), skipped, mustJSON(want))
	}
	req.StructuredMessages = req.StructuredMessages[:1]
	if convs, _, err := litellmConversations(req); err != nil || len(convs) != 1 {
		t.Errorf("without trailing text: %s, %v", mustJSON(convs), err)
	}
}
