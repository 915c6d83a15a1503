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
	t.Helper()
	body := mustJSON(map[string]any{"model": "fake-llm", "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": "How do I know when my bread is done baking?"}}})
	start := time.Now()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rd := newSSEReader(resp.Body)
	var at []time.Duration
	for {
		ev, err := rd.next()
		if err != nil {
			break
		}
		d := bytes.TrimSpace(ev.data)
		if string(d) == "[DONE]" {
			return at
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
		}
		_ = json.Unmarshal(d, &c)
		if len(c.Choices) > 0 && c.Choices[0].Delta.Content != "" {
			at = append(at, time.Since(start))
		}
	}
	return at
}

// timedResponses is timedStream for the Responses API: when each
// output_text delta arrived.
func timedResponses(t testing.TB, url string) []time.Duration {
	t.Helper()
	body := mustJSON(map[string]any{"model": "fake-llm", "stream": true, "input": "How do I know when my bread is done baking?"})
	start := time.Now()
	resp, err := http.Post(url+"/v1/responses", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	rd := newSSEReader(resp.Body)
	var at []time.Duration
	for {
		ev, err := rd.next()
		if err != nil {
			break
		}
		var e struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(bytes.TrimSpace(ev.data), &e)
		switch e.Type {
		case "response.output_text.delta":
			at = append(at, time.Since(start))
		case "response.completed":
			return at
		}
	}
	return at
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
