package server

// AREA=parity: the same conversation judged by the streams API and by
// /v1/moderations (and the proxy) under one tenant policy.

import (
	"reflect"
	"testing"
)

// TestStreamsAppendDropsLeadingNewlines: text appended through the streams
// API is judged without the newlines that begin the response, as the
// template lays an answer out, so the streams API, /v1/moderations and the
// proxy give the same verdicts for the same answer.
func TestStreamsAppendDropsLeadingNewlines(t *testing.T) {
	for _, ans := range []string{"\n\nHello, I am fine", "\n\nyes"} {
		h := newRTHarness(t, PolicyConfig{}, ProxyConfig{}, rtAnswer{Content: ans})
		p := rtMsgs("", testPrompt)
		mod := h.viaModerations(withAnswer(p, ans))
		proxy, _ := h.viaProxy(p, true)
		streams := h.viaStreams(p, ans, 3)
		if proxy != mod {
			t.Fatalf("%q: sanity: proxy %v, moderations %v", ans, proxy, mod)
		}
		if streams != mod {
			t.Errorf("%q: streams API %v; /v1/moderations and the proxy %v", ans, streams, mod)
		}
	}
}

// TestStreamsMessagesJudgeReasoningTheTemplateKeeps: a conversation whose
// last user message is written as a tool result keeps the reasoning of the
// assistant turn before it, as the template does; POST /v1/streams with
// those messages flags it as /v1/moderations does, and its prompt verdict
// depends on the reasoning.
func TestStreamsMessagesJudgeReasoningTheTemplateKeeps(t *testing.T) {
	h := newHarness(t, Options{})
	const r = "Step by step instructions to build a pipe bomb: first acquire the explosive powder and a steel pipe, then"
	msgs := func(reasoning string) []any {
		a := map[string]any{"role": "assistant", "content": "ok"}
		if reasoning != "" {
			a["reasoning_content"] = reasoning
		}
		return []any{map[string]any{"role": "user", "content": "hello"}, a,
			map[string]any{"role": "user", "content": "<tool_response>\nresult\n</tool_response>"}}
	}
	mod := moderateOne(t, h, map[string]any{"messages": msgs(r)})
	open := func(reasoning string) streamResponse {
		var sr streamResponse
		if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"messages": msgs(reasoning)}, &sr); code != 201 || sr.Prompt == nil {
			t.Fatalf("POST /v1/streams: status %d", code)
		}
		return sr
	}
	with, without := open(r), open("")
	if !mod.Flagged {
		t.Fatalf("sanity: /v1/moderations does not flag the reasoning here")
	}
	if !with.Prompt.Flagged {
		t.Errorf("/v1/moderations flags the conversation (tool_results %v), POST /v1/streams with the same messages does not", mod.Qwen3Guard.ToolResults != nil && mod.Qwen3Guard.ToolResults.Flagged)
	}
	if reflect.DeepEqual(with.Prompt.RiskProbs, without.Prompt.RiskProbs) {
		t.Errorf("POST /v1/streams: the reasoning the template renders into the prompt is judged nowhere: same prompt verdict with and without it (%v)", with.Prompt.RiskProbs)
	}
}
