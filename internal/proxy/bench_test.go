package proxy

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// BenchmarkRelay streams 64 one-token deltas from the fake upstream,
// directly and through the proxy in each mode, for each API (chat
// completions, the Responses API), on the tiny model (cheap enough for one
// iteration in CI; TestLatency measures the 0.6B shape).
func BenchmarkRelay(b *testing.B) {
	m := tinyModel(b)
	const n = 64
	for _, api := range []struct {
		name       string
		spec       upstreamSpec
		newHandler func(Config, Moderator) (http.Handler, error)
		timed      func(testing.TB, string) []time.Duration
	}{
		{"chat", upstreamSpec{Content: wordDeltas(n)}, NewHandler, timedChat},
		{"responses", upstreamSpec{Events: respSpec{Content: wordDeltas(n)}.events()}, NewResponsesHandler, timedResponses},
	} {
		up := newFakeUpstream(b, api.spec)
		for _, name := range []string{"direct", "pass-through", "hold-back"} {
			b.Run(api.name+"/"+name, func(b *testing.B) {
				url := up.URL
				var p *testProxy
				if name != "direct" {
					mode, _ := ParseMode(name)
					p = newTestProxyFor(b, api.newHandler, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
					url = p.URL
				}
				var last time.Duration
				for b.Loop() {
					at := api.timed(b, url)
					if len(at) != n {
						b.Fatalf("%d content events", len(at))
					}
					last += at[n-1]
					if p != nil {
						p.wait(b, 1)
					}
				}
				b.ReportMetric(float64(last.Nanoseconds())/float64(b.N*n), "ns/token")
			})
		}
	}
}

// timedChat is timedStream with a reader as light as timedResponses' (the
// client's reading is the same work for both APIs): when each content
// delta arrived.
func timedChat(t testing.TB, url string) []time.Duration {
	return timedPost(t, url+"/v1/chat/completions", map[string]any{"model": "fake-llm", "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": "How do I know when my bread is done baking?"}}},
		func(ev sseEvent) (text, end bool) {
			d := bytes.TrimSpace(ev.data)
			var c struct {
				Choices []struct {
					Delta struct {
						Content string `json:"content"`
					} `json:"delta"`
				} `json:"choices"`
			}
			_ = json.Unmarshal(d, &c)
			return len(c.Choices) > 0 && c.Choices[0].Delta.Content != "", string(d) == "[DONE]"
		})
}

// timedResponses is timedStream for the Responses API: when each
// output_text delta arrived.
func timedResponses(t testing.TB, url string) []time.Duration {
	return timedPost(t, url+"/v1/responses", map[string]any{"model": "fake-llm", "stream": true, "input": "How do I know when my bread is done baking?"},
		func(ev sseEvent) (text, end bool) {
			var e struct {
				Type string `json:"type"`
			}
			_ = json.Unmarshal(bytes.TrimSpace(ev.data), &e)
			return e.Type == "response.output_text.delta", e.Type == "response.completed"
		})
}

// BenchmarkParseDelta reads one text delta as each API sends it: a chat
// chunk (parseEvent) and a Responses output_text.delta (the stream's
// parse, with the item and part it extends).
func BenchmarkParseDelta(b *testing.B) {
	chat := []byte(`{"id":"chatcmpl-fake42","object":"chat.completion.chunk","created":1700000000,"model":"fake-llm","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":{"content":" bread"},"logprobs":null,"finish_reason":null}]}`)
	b.Run("chat", func(b *testing.B) {
		for b.Loop() {
			if p := parseEvent(sseEvent{data: chat}); p.bad != nil {
				b.Fatal(p.bad)
			}
		}
	})
	evs := respSpec{Content: []string{"The"}}.events()
	var delta []byte
	for _, e := range evs {
		if bytes.Contains(e, []byte("event: response.output_text.delta\n")) {
			_, delta, _ = bytes.Cut(e, []byte("data: "))
			delta = bytes.TrimSpace(delta)
		}
	}
	b.Run("responses", func(b *testing.B) {
		s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
		for _, e := range evs[:4] { // created, in_progress, item and part added
			_, d, _ := bytes.Cut(e, []byte("data: "))
			if p := s.parse(sseEvent{data: bytes.TrimSpace(d)}); p.bad != nil {
				b.Fatal(p.bad)
			}
		}
		for b.Loop() {
			if p := s.parse(sseEvent{data: delta}); p.bad != nil {
				b.Fatal(p.bad)
			}
		}
	})
}
