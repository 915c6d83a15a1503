package server

import (
	"strings"
	"testing"
)

// TestResumeOverLimitRefusedBeforeJudging: a resume whose last later
// prompt takes the stream past --max-stream-tokens by the scaffold that
// closes the turn before it ("<|im_end|>\n" after a response, "\n" after a
// prompt) is refused before anything is fed to the model, naming the
// prompt's field.
func TestResumeOverLimitRefusedBeforeJudging(t *testing.T) {
	h := newHarness(t, Options{MaxStreamTokens: 60})
	for k := 0; k <= 60; k++ {
		before := h.srv.metrics.fed.Load()
		body := map[string]any{"resume": true, "prompt": "hi",
			"response": map[string]any{"ids": make([]int, k)},
			"turns":    []any{map[string]any{"prompt": "And then?"}}}
		var e errBody
		code, _ := h.do("POST", "/v1/streams", "", body, &e)
		fed := h.srv.metrics.fed.Load() - before
		if code == 400 && e.Error.Code == "context_length_exceeded" && fed > 0 {
			t.Errorf("response of %d ids: refused 400 context_length_exceeded (param %v) after %d tokens were fed to the model", k, *e.Error.Param, fed)
		}
	}
}

// TestLiteLLMStopsAtRefusal: the LiteLLM route judges a request's
// conversations one after the other and stops at the first refusal: a
// request refused for its prompt's length has nothing more run through the
// model (its tool definitions included).
func TestLiteLLMStopsAtRefusal(t *testing.T) {
	h := newHarness(t, Options{MaxStreamTokens: 60})
	long := strings.Repeat("word ", 200)
	body := map[string]any{
		"input_type":          "request",
		"structured_messages": []map[string]any{{"role": "user", "content": long}},
		"tools": []map[string]any{{"type": "function", "function": map[string]any{
			"name": "lookup", "description": "Look a word up."}}},
	}
	before := h.srv.metrics.fed.Load()
	var e errBody
	code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "", body, &e)
	fed := h.srv.metrics.fed.Load() - before
	if code != 400 || e.Error.Code != "context_length_exceeded" {
		t.Fatalf("status %d %+v, want 400 context_length_exceeded", code, e.Error)
	}
	if fed != 0 {
		t.Errorf("refused with 400 context_length_exceeded after %d tokens of the same request were fed to the model", fed)
	}
}
