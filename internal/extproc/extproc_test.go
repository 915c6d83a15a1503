package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/extproc"
	"github.com/streamguard/streamguard/internal/guardtest"
	"github.com/streamguard/streamguard/internal/proxy"
)

// testResponse has multi-byte characters of every length.
const testResponse = guardtest.Response

// tinyModel is the tiny model every test package shares.
func tinyModel(t testing.TB) *guard.Model { return guardtest.Tiny(t) }

func thresholds(cats []string, tau float32) map[string]float32 {
	th := map[string]float32{}
	for _, c := range cats {
		th[c] = tau
	}
	return th
}

// safePolicy flags nothing a random tiny model says.
func safePolicy(m *guard.Model) guard.Policy {
	l := m.Info().Labels
	return guard.Policy{Mode: guard.Strict, Thresholds: thresholds(append(append([]string(nil), l.ResponseCategory...), l.QueryCategory...), 1)}
}

// promptPolicy flags every prompt.
func promptPolicy(m *guard.Model) guard.Policy {
	return guard.Policy{Mode: guard.Strict, Debounce: 1, Thresholds: thresholds(m.Info().Labels.QueryCategory, 0)}
}

func nonSafeScore(probs []float32, labels []string) float32 {
	var s float32
	for i, l := range labels {
		if l == "Unsafe" || l == "Controversial" {
			s += probs[i]
		}
	}
	return s
}

// flagCase is a prompt and a policy under which the guard flags
// testResponse near its middle, with the text the client may see of it.
type flagCase struct {
	prompt   string
	policy   guard.Policy
	runStart int
	before   string // the judged text before the run that flags
}

var (
	flagOnce sync.Once
	theFlag  flagCase
)

// findFlag searches, as the proxy's tests do, for a policy (one threshold
// tau for every category) whose first debounce run falls near the middle
// of the response while the prompt stays below it.
func findFlag(t testing.TB, m *guard.Model) flagCase {
	t.Helper()
	flagOnce.Do(func() {
		l := m.Info().Labels
		cats := append(append([]string(nil), l.ResponseCategory...), l.QueryCategory...)
		for p := 0; p < 64; p++ {
			prompt := fmt.Sprintf("Tell me something about topic number %d, please.", p)
			msgs := []guard.Message{{Role: "user", Content: prompt}, {Role: "assistant", Content: testResponse}}
			res, err := m.Moderate(context.Background(), msgs, nil)
			if err != nil {
				t.Fatal(err)
			}
			n := len(res.Tokens)
			pairs := make([]float32, n)
			for i := 1; i < n; i++ {
				pairs[i] = min(nonSafeScore(res.Tokens[i-1].RiskProbs, l.ResponseRisk), nonSafeScore(res.Tokens[i].RiskProbs, l.ResponseRisk))
			}
			promptScore := nonSafeScore(res.Prompt.RiskProbs, l.QueryRisk)
			best, at := float32(-1), -1
			for i := 1; i < n; i++ {
				tau := pairs[i]
				if tau <= promptScore {
					continue
				}
				first := 1
				for pairs[first] < tau {
					first++
				}
				if first >= 3 && (at < 0 || abs(first-n/2) < abs(at-n/2)) {
					best, at = tau, first
				}
			}
			if at < 0 {
				continue
			}
			pol := guard.Policy{Mode: guard.Strict, Thresholds: thresholds(cats, best)}
			got, err := m.Moderate(context.Background(), msgs, &pol)
			if err != nil {
				t.Fatal(err)
			}
			if got.Prompt.Flagged || got.FlaggedIndex != at {
				continue
			}
			start := at
			for start > 0 && got.Tokens[start-1].NonSafe {
				start--
			}
			var b strings.Builder
			for _, tv := range got.Tokens[:start] {
				b.WriteString(tv.Text)
			}
			theFlag = flagCase{prompt: prompt, policy: pol, runStart: start, before: b.String()}
			return
		}
		t.Fatal("no prompt gives a flag in the middle of the response")
	})
	if theFlag.prompt == "" {
		t.Fatal("no flag case")
	}
	return theFlag
}

func abs(x int) int { return max(x, -x) }

// ---- moderator that counts open streams ----

type countingMod struct {
	proxy.Moderator
	open atomic.Int64
}

func (c *countingMod) Open(ctx context.Context, p guard.Policy) (proxy.Stream, error) {
	s, err := c.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	c.open.Add(1)
	return &countedStream{Stream: s, c: c}, nil
}

type countedStream struct {
	proxy.Stream
	c    *countingMod
	once sync.Once
}

func (s *countedStream) Close() {
	s.once.Do(func() { s.c.open.Add(-1) })
	s.Stream.Close()
}

// waitClosed fails unless every stream the service opened is closed.
func (c *countingMod) waitClosed(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for c.open.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d guard streams still open", c.open.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- tenants by key ----

type keys map[string]*proxy.Tenant

func (k keys) Admit(ctx context.Context, h http.Header) (extproc.Admission, *proxy.Answer) {
	key := h.Get("X-Api-Key")
	if a := h.Get("Authorization"); a != "" {
		key = strings.TrimPrefix(a, "Bearer ")
	}
	t := k[key]
	if t == nil {
		hd := http.Header{}
		hd.Set("Content-Type", "application/json")
		return extproc.Admission{}, &proxy.Answer{Status: http.StatusUnauthorized, Header: hd,
			Body: []byte(`{"error":{"message":"unknown key","type":"authentication_error","param":null,"code":"invalid_api_key"}}`)}
	}
	return extproc.Admission{Ctx: ctx, Tenant: t, Done: func(int) {}}, nil
}

// ---- fixture ----

type fixture struct {
	t     testing.TB
	m     *guard.Model
	mod   *countingMod
	audit *guardtest.JSONLog
	env   *envoy
}

func newFixture(t testing.TB, tenants keys, f filter, wait time.Duration) *fixture {
	t.Helper()
	m := tinyModel(t)
	fx := &fixture{t: t, m: m, mod: &countingMod{Moderator: proxy.Direct(m)}, audit: &guardtest.JSONLog{}}
	ext, err := proxy.NewExternal(proxy.Config{Audit: slog.New(slog.NewJSONHandler(fx.audit, nil)),
		DefaultTenant: proxy.Tenant{Name: "default", Policy: safePolicy(m)}}, fx.mod)
	if err != nil {
		t.Fatal(err)
	}
	var adm extproc.Admitter
	if tenants != nil {
		adm = tenants
	}
	svc, err := extproc.New(extproc.Config{External: ext, Admit: adm, ChunkWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	fx.env = &envoy{t: t, client: startService(t, svc), f: f}
	t.Cleanup(func() { fx.mod.waitClosed(t) })
	return fx
}

// lastEvent waits for the audit record of the last exchange.
func (fx *fixture) lastEvent() string {
	fx.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if rs := fx.audit.Records(fx.t); len(rs) > 0 {
			return rs[len(rs)-1]["event"].(string)
		}
		if time.Now().After(deadline) {
			fx.t.Fatal("no audit record")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- the upstream's bytes ----

func chunkJSON(delta map[string]any, finish any) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": "chatcmpl-fake42", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
	})
	return b
}

// sseBody is the upstream's event stream for text cut into deltas of
// about size bytes.
func sseBody(text string, size int) []byte {
	ev := func(b []byte) []byte { return append(append([]byte("data: "), b...), "\n\n"...) }
	out := ev(chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil))
	for len(text) > 0 {
		n := min(size, len(text))
		for n < len(text) && !utf8.RuneStart(text[n]) {
			n++
		}
		out = append(out, ev(chunkJSON(map[string]any{"content": text[:n]}, nil))...)
		text = text[n:]
	}
	out = append(out, ev(chunkJSON(map[string]any{}, "stop"))...)
	return append(out, "data: [DONE]\n\n"...)
}

func wholeBody(text string) []byte {
	b, _ := json.Marshal(map[string]any{"id": "chatcmpl-fake42", "object": "chat.completion", "created": 1700000000, "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": text}, "finish_reason": "stop"}},
		"usage":   map[string]int{"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59}})
	return b
}

func chatBody(prompt string, stream bool) []byte {
	b, _ := json.Marshal(map[string]any{"model": "fake-llm", "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": prompt}}})
	return b
}

func sseReply(chunks [][]byte) func(http.Header, []byte) upstreamReply {
	return func(http.Header, []byte) upstreamReply {
		return upstreamReply{header: map[string]string{"Content-Type": "text/event-stream; charset=utf-8"}, chunks: chunks}
	}
}

func jsonReply(chunks [][]byte) func(http.Header, []byte) upstreamReply {
	return func(http.Header, []byte) upstreamReply {
		return upstreamReply{header: map[string]string{"Content-Type": "application/json"}, chunks: chunks}
	}
}

// ---- the proxy, for reference ----

// viaProxy answers the same request through the HTTP proxy (its handler
// and an upstream that sends the same bytes): what ext_proc answers must
// match it.
func viaProxy(t testing.TB, m *guard.Model, tenant proxy.Tenant, reqBody []byte, contentType string, upBody []byte) (int, http.Header, []byte) {
	t.Helper()
	return viaProxyAt(t, "/v1/chat/completions", m, tenant, reqBody, contentType, upBody)
}

// viaProxyAt is viaProxy for the proxy's route path: /v1/chat/completions
// or /v1/responses.
func viaProxyAt(t testing.TB, path string, m *guard.Model, tenant proxy.Tenant, reqBody []byte, contentType string, upBody []byte) (int, http.Header, []byte) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(upBody)
	}))
	defer up.Close()
	newHandler := proxy.NewHandler
	if path == "/v1/responses" {
		newHandler = proxy.NewResponsesHandler
	}
	h, err := newHandler(proxy.Config{Upstream: up.URL, DefaultTenant: tenant}, proxy.Direct(m))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Post(srv.URL+path, "application/json", bytes.NewReader(reqBody))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

var (
	requestIDs = regexp.MustCompile(`"request_id":"[0-9a-f]+"`)
	createdAts = regexp.MustCompile(`"created_at":[0-9]+`)
	chatIDs    = regexp.MustCompile(`chatcmpl-[0-9a-f]{24}`)
	createds   = regexp.MustCompile(`"created":[0-9]+`)
)

// normalize blanks what differs between two answers to the same request:
// request ids, and the id and time of a completion streamguard writes.
func normalize(b []byte) string {
	s := requestIDs.ReplaceAllString(string(b), `"request_id":"X"`)
	s = chatIDs.ReplaceAllString(s, "chatcmpl-X")
	s = createdAts.ReplaceAllString(s, `"created_at":0`)
	return createds.ReplaceAllString(s, `"created":0`)
}

// ---- reading the client's stream ----

type clientStream struct {
	content string
	finish  string
	done    bool
	events  int
}

func readStream(t testing.TB, body []byte) clientStream {
	t.Helper()
	var cs clientStream
	for _, ev := range strings.Split(string(body), "\n\n") {
		if ev == "" {
			continue
		}
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok {
			t.Fatalf("event %q", ev)
		}
		cs.events++
		if cs.done {
			t.Fatalf("event after [DONE]: %q", ev)
		}
		if data == "[DONE]" {
			cs.done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		for _, ch := range c.Choices {
			cs.content += ch.Delta.Content
			if ch.FinishReason != nil {
				cs.finish = *ch.FinishReason
			}
		}
	}
	return cs
}

// chunkings are the awkward ways Envoy hands the upstream's body over:
// 7-byte pieces (inside events, inside UTF-8 characters, inside "\n\n"),
// 61-byte pieces, and pieces that end one byte short of each event.
func chunkings(body []byte) map[string][][]byte {
	var shortOfEvent [][]byte
	rest := body
	for len(rest) > 0 {
		i := bytes.Index(rest, []byte("\n\n"))
		n := len(rest)
		if i >= 0 {
			n = i + 1 // one byte short of the blank line's end
		}
		if n == 0 {
			n = 1
		}
		shortOfEvent = append(shortOfEvent, rest[:n])
		rest = rest[n:]
	}
	return map[string][][]byte{"7-byte": split(body, 7), "61-byte": split(body, 61), "short-of-event": shortOfEvent}
}
