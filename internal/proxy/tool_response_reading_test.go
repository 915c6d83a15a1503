package proxy

import (
	"strings"
	"testing"
)

// TestToolResultReadingMustAgree: whether a user turn is a tool result
// ("<tool_response>…</tool_response>") decides which earlier reasoning the
// template keeps, and the model's server reads a text part's "text" alone
// (vLLM). A member it does not read (a part's "refusal" or "thinking", a
// part with no text) would make the guard read another turn than the
// model, and drop reasoning the model reads: such a request is refused,
// through chat completions and the Responses API.
func TestToolResultReadingMustAgree(t *testing.T) {
	prefix := `{"model":"m","messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":"ok","reasoning_content":"` + modelReadsPayload + `"},`
	for _, content := range []string{
		`[{"type":"text","text":"<tool_response>go on</tool_response>","refusal":"x"}]`,
		`[{"type":"text","text":"<tool_response>go on</tool_response>","thinking":"x"}]`,
		`[{"type":"text","text":"<tool_response>go on</tool_response>"},{"type":"text","refusal":"x"}]`,
		`[{"type":"text","text":"<tool_response>go"},{"type":"text","refusal":"on</tool_response>"}]`,
	} {
		if _, err := parseRequest([]byte(prefix + `{"role":"user","content":` + content + `}]}`)); err == nil || !strings.Contains(err.Error(), "tool result") {
			t.Errorf("content %s: %v, want a refusal", content, err)
		}
	}
	// Both readings a tool result, or neither: taken, the reasoning judged.
	checkJudged(t, prefix+`{"role":"user","content":[{"type":"text","text":"<tool_response>go on</tool_response>"}]}]}`)
	checkJudged(t, prefix+`{"role":"user","content":"<tool_response>go on</tool_response>"}]}`)

	body := `{"model":"m","input":[{"role":"user","content":"Hi"},` +
		`{"type":"reasoning","summary":[{"type":"summary_text","text":"` + modelReadsPayload + `"}]},` +
		`{"role":"assistant","content":"ok"},` +
		`{"role":"user","content":[{"type":"input_text","text":"<tool_response>go on</tool_response>","refusal":"x"}]}]}`
	if _, err := parseResponsesRequest([]byte(body)); err == nil || !strings.Contains(err.Error(), "tool result") {
		t.Errorf("Responses request: %v, want a refusal", err)
	}
}
