package server

import (
	"fmt"
	"strings"
	"testing"
)

// TestModerationAuditStreamIDs: each stream a moderation opens has an
// audit id of its own, "modr-ID-N" with N the input it judges and ID the
// request's X-Request-Id ("modr-ID-N-results" for its tool results). Input
// 0 is a plain conversation, input 1 a conversation with tool results,
// judged on two streams: conversation, then results.
func TestModerationAuditStreamIDs(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	plain := map[string]any{"messages": []any{map[string]any{"role": "user", "content": "Hello there."}}}
	tools := map[string]any{"messages": []any{
		map[string]any{"role": "user", "content": "What is the weather?"},
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "weather", "arguments": "{}"}}}},
		map[string]any{"role": "tool", "tool_call_id": "c", "content": "sunny"},
	}}
	h.audit.Reset()
	var r struct {
		ID      string
		Results []moderationResult
	}
	code, hdr := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": []any{plain, tools}}, &r)
	if code != 200 || len(r.Results) != 2 || r.Results[1].Qwen3Guard.ToolResults == nil {
		t.Fatalf("status %d, %d results", code, len(r.Results))
	}
	rid := hdr.Get("X-Request-Id")
	recs := auditRecords(t, h, "stream closed")
	count := map[string]int{}
	var ids []string
	for _, rec := range recs {
		id := fmt.Sprint(rec["stream"])
		count[id]++
		ids = append(ids, id)
	}
	t.Logf("X-Request-Id %s; stream closed records: %s", rid, strings.Join(ids, ", "))
	if len(recs) != 3 {
		t.Fatalf("%d stream closed records; want 3", len(recs))
	}
	for id, n := range count {
		if n > 1 {
			t.Errorf("stream id %s names %d different streams in the audit log (input 0's conversation and input 1's tool results)", id, n)
		}
	}
	if count["modr-"+rid+"-0"] != 1 {
		t.Errorf("want exactly one stream named for input 0")
	}
}
