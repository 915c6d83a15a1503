package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// postUsage posts a streamed chat request with
// stream_options.include_usage and returns the events. The prompt comes
// with an image part (skipped and noted), and a tool call and its result
// follow it (judged after the prompt).
func postUsage(t *testing.T, url, prompt string, includeUsage bool) (*http.Response, []string) {
	t.Helper()
	body := mustJSON(map[string]any{"model": "fake-llm", "stream": true, "stream_options": map[string]any{"include_usage": includeUsage},
		"messages": []any{map[string]any{"role": "user", "content": []any{map[string]any{"type": "text", "text": prompt},
			map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/x.png"}}}},
			map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c1", "type": "function", "function": map[string]any{"name": "f", "arguments": "{}"}}}},
			map[string]any{"role": "tool", "tool_call_id": "c1", "content": "42"}}})
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ev := strings.SplitAfter(string(b), "\n\n")
	return resp, ev[:len(ev)-1]
}

type usageEvent struct {
	ID          string         `json:"id"`
	Object      string         `json:"object"`
	Model       string         `json:"model"`
	Choices     []any          `json:"choices"`
	Usage       map[string]int `json:"usage"`
	Streamguard map[string]any `json:"streamguard"`
}

func parseUsageEvent(t *testing.T, ev string) usageEvent {
	t.Helper()
	var u usageEvent
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(ev), "data: ")), &u); err != nil {
		t.Fatalf("event %q: %v", ev, err)
	}
	return u
}

// TestCutStreamUsageChunk: a stream the guard cuts ends, when the client
// asked stream_options.include_usage, with OpenAI's usage chunk (no
// choices, a usage object) between the content_filter finish and [DONE]:
// the upstream's last usage when it sent one, else the response tokens the
// guard judged. Without include_usage there is none.
func TestCutStreamUsageChunk(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	ev := func(b []byte) []byte { return append(append([]byte("data: "), b...), "\n\n"...) }

	t.Run("guard count", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 40), Hang: true})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
		resp, events := postUsage(t, p.URL, fc.Prompt, true)
		rec := p.lastRecord(t)
		n := len(events)
		if resp.StatusCode != 200 || n < 3 || events[n-1] != "data: [DONE]\n\n" || !strings.Contains(events[n-3], `"finish_reason":"content_filter"`) {
			t.Fatalf("status %d, events %q", resp.StatusCode, events)
		}
		if got := resp.Header.Get("X-Streamguard-Skipped"); got != "image_url" {
			t.Errorf("X-Streamguard-Skipped %q", got)
		}
		u := parseUsageEvent(t, events[n-2])
		judged := int(rec["tokens"].(float64))
		if u.ID != "chatcmpl-fake42" || u.Object != "chat.completion.chunk" || u.Model != "fake-llm" || u.Choices == nil || len(u.Choices) != 0 ||
			u.Usage["prompt_tokens"] != 0 || u.Usage["completion_tokens"] != judged || u.Usage["total_tokens"] != judged ||
			judged < fc.Index+1 || u.Streamguard["usage"] != "guard" {
			t.Errorf("usage chunk %q, want completion_tokens %d (>= %d)", events[n-2], judged, fc.Index+1)
		}
		if !strings.Contains(events[n-2], `"choices":[]`) {
			t.Errorf("usage chunk %q has no empty choices array", events[n-2])
		}
	})

	t.Run("upstream usage", func(t *testing.T) {
		// A server that reports usage in every chunk (vLLM's
		// continuous_usage_stats): the last one seen is the one sent.
		var evs [][]byte
		for i, c := range splitRunes(testResponse, 40) {
			evs = append(evs, ev(mustJSON(map[string]any{
				"id": "chatcmpl-fake42", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake-llm",
				"choices": []any{map[string]any{"index": 0, "delta": map[string]any{"content": c}, "finish_reason": nil}},
				"usage":   map[string]int{"prompt_tokens": 11, "completion_tokens": i + 1, "total_tokens": 12 + i}})))
		}
		up := newFakeUpstream(t, upstreamSpec{Events: evs, HangAfter: 1})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
		_, events := postUsage(t, p.URL, fc.Prompt, true)
		p.wait(t, 1)
		n := len(events)
		u := parseUsageEvent(t, events[n-2])
		c := u.Usage["completion_tokens"]
		if u.Streamguard["usage"] != "upstream" || u.Usage["prompt_tokens"] != 11 || c < 1 || c > len(evs) || u.Usage["total_tokens"] != 11+c || len(u.Choices) != 0 {
			t.Errorf("usage chunk %q", events[n-2])
		}
	})

	t.Run("not asked", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: splitRunes(testResponse, 40), Hang: true})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: fc.Policy}, nil)
		_, events := postUsage(t, p.URL, fc.Prompt, false)
		p.wait(t, 1)
		n := len(events)
		if n < 2 || !strings.Contains(events[n-2], `"finish_reason":"content_filter"`) || strings.Contains(strings.Join(events, ""), `"usage"`) {
			t.Errorf("events %q", events)
		}
	})

	t.Run("refused prompt", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Content: []string{"x"}})
		flagAll := Tenant{Policy: guard.Policy{Mode: guard.Strict, Thresholds: allThresholds(m, 0)}, Refusal: RefusalCompletion}
		p := newTestProxy(t, up.URL, Direct(m), flagAll, nil)
		_, events := postUsage(t, p.URL, fc.Prompt, true)
		p.wait(t, 1)
		n := len(events)
		if n != 4 || !strings.Contains(events[1], `"finish_reason":"content_filter"`) || events[3] != "data: [DONE]\n\n" {
			t.Fatalf("events %q", events)
		}
		u := parseUsageEvent(t, events[2])
		if u.Streamguard["usage"] != "guard" || u.Usage["total_tokens"] != 0 || len(u.Usage) != 3 || len(u.Choices) != 0 || up.calls != 0 {
			t.Errorf("usage chunk %q, upstream calls %d", events[2], up.calls)
		}
	})
}
