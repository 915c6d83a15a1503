package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	openai "github.com/sashabaranov/go-openai"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardtest"
)

// testResponse has multi-byte characters of every length.
const testResponse = guardtest.Response

// tinyModel is the tiny model every test package shares.
func tinyModel(t testing.TB) *guard.Model { return guardtest.Tiny(t) }

// allThresholds sets threshold tau for every response and query category,
// so a token is non-safe exactly when P(Unsafe)+P(Controversial) >= tau
// (strict mode).
func allThresholds(m *guard.Model, tau float32) map[string]float32 {
	th := map[string]float32{}
	l := m.Info().Labels
	for _, c := range append(append([]string(nil), l.ResponseCategory...), l.QueryCategory...) {
		th[c] = tau
	}
	return th
}

// safePolicy flags nothing a random tiny model says: P(Safe) is never
// zero, so P(Unsafe)+P(Controversial) stays below 1.
func safePolicy(m *guard.Model) guard.Policy {
	return guard.Policy{Mode: guard.Strict, Thresholds: allThresholds(m, 1)}
}

func abs(x int) int { return max(x, -x) }

func nonSafeScore(probs []float32, labels []string) float32 {
	var s float32
	for i, l := range labels {
		if l == "Unsafe" || l == "Controversial" {
			s += probs[i]
		}
	}
	return s
}

// flagCase is a conversation and a policy under which the guard API, fed
// directly (Model.Moderate), flags the response at token Index.
type flagCase struct {
	Prompt   string
	Policy   guard.Policy
	Index    int // the token that flags
	RunStart int // the first token of the run that flags
	Tokens   []guard.TokenVerdict
}

// findFlagCase searches deterministically for a flagged response. A random
// model has no notion of harm, so the flag comes from the policy: with one
// threshold tau for every category, a token is non-safe when
// P(Unsafe)+P(Controversial) >= tau, and with the default debounce of 2 the
// guard flags the first token i with min(score[i-1], score[i]) >= tau. The
// search tries each such pair minimum as tau and keeps the one whose first
// crossing is nearest the fraction target of the response (so there is
// text on both sides of the cut), provided the prompt's own score stays below it; it
// moves to the next candidate prompt otherwise.
func findFlagCase(t testing.TB, m *guard.Model, msgs func(prompt string) []guard.Message, target float64) flagCase {
	t.Helper()
	l := m.Info().Labels
	for p := 0; p < 64; p++ {
		prompt := fmt.Sprintf("Tell me something about topic number %d, please.", p)
		res, err := m.Moderate(context.Background(), msgs(prompt), nil)
		if err != nil {
			t.Fatal(err)
		}
		n := len(res.Tokens)
		pairs := make([]float32, n) // pairs[0] never flags
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
			goal := int(target * float64(n))
			if first >= 3 && (at < 0 || abs(first-goal) < abs(at-goal)) {
				best, at = tau, first
			}
		}
		if at < 0 {
			continue
		}
		pol := guard.Policy{Mode: guard.Strict, Thresholds: allThresholds(m, best)}
		got, err := m.Moderate(context.Background(), msgs(prompt), &pol)
		if err != nil {
			t.Fatal(err)
		}
		if got.Prompt.Flagged || got.FlaggedIndex != at {
			t.Fatalf("policy search: expected a flag at %d, the guard says %d (prompt flagged %v)", at, got.FlaggedIndex, got.Prompt.Flagged)
		}
		start := at
		for start > 0 && got.Tokens[start-1].NonSafe {
			start--
		}
		return flagCase{Prompt: prompt, Policy: pol, Index: at, RunStart: start, Tokens: got.Tokens}
	}
	t.Fatal("no candidate prompt gives a flag in the second half")
	return flagCase{}
}

// textBefore is the text of the judged tokens before token n, cut to whole
// characters: what hold-back may show of a response cut at a run starting
// at n.
func textBefore(tvs []guard.TokenVerdict, n int) string {
	var b strings.Builder
	for _, tv := range tvs[:n] {
		b.WriteString(tv.Text)
	}
	return b.String()
}

// ---- fake upstream ----

type upstreamSpec struct {
	Reasoning      []string // reasoning deltas
	ReasoningField string   // "reasoning_content" (default) or "reasoning"
	Content        []string // content deltas
	// Write is the number of bytes per write+flush (0: one event each).
	Write int
	// Hang: after the text, wait for the request to be cancelled instead
	// of finishing the stream.
	Hang bool
	// FinishWithText sends the last text delta in the chunk that carries
	// finish_reason.
	FinishWithText bool
	// Pace is a pause before each text event, as a generating model makes.
	Pace time.Duration
	// DropAfter > 0: close the connection after that many events.
	DropAfter int
	// Status and ErrBody: answer with an error instead.
	Status  int
	ErrBody string
	// Header is set on every response.
	Header map[string]string
	// Events, when set, is the stream verbatim (instead of the chunks
	// made from the fields above); Whole the non-streamed body.
	Events [][]byte
	Whole  []byte
	// HeaderDelay is a pause before the response headers.
	HeaderDelay time.Duration
	// HangAfter: a streamed response waits for the request to be
	// cancelled after the whole stream when HangAfter > 0; a whole body
	// after its first HangAfter bytes. 0 means no hang.
	HangAfter int
}

type fakeUpstream struct {
	*httptest.Server
	spec upstreamSpec

	mu       sync.Mutex
	calls    int
	headers  []http.Header
	reqBody  []byte // the last request's body
	body     []byte // what the last streamed response wrote
	canceled chan struct{}
	once     sync.Once
}

func newFakeUpstream(t testing.TB, spec upstreamSpec) *fakeUpstream {
	f := &fakeUpstream{spec: spec, canceled: make(chan struct{})}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func chunkJSON(delta map[string]any, finish any) []byte {
	v := map[string]any{
		"id": "chatcmpl-fake42", "object": "chat.completion.chunk", "created": 1700000000, "model": "fake-llm",
		"system_fingerprint": "fp_fake",
		"choices":            []any{map[string]any{"index": 0, "delta": delta, "logprobs": nil, "finish_reason": finish}},
	}
	return mustJSON(v)
}

// events renders the stream the upstream sends.
func (s upstreamSpec) events() [][]byte {
	if s.Events != nil {
		return s.Events
	}
	ev := func(b []byte) []byte { return append(append([]byte("data: "), b...), "\n\n"...) }
	out := [][]byte{ev(chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil))}
	field := s.ReasoningField
	if field == "" {
		field = "reasoning_content"
	}
	for _, r := range s.Reasoning {
		out = append(out, ev(chunkJSON(map[string]any{field: r}, nil)))
	}
	content := s.Content
	if s.FinishWithText && len(content) > 0 {
		content = content[:len(content)-1]
	}
	for _, c := range content {
		out = append(out, ev(chunkJSON(map[string]any{"content": c}, nil)))
	}
	if s.Hang {
		return out
	}
	last := map[string]any{}
	if len(content) < len(s.Content) {
		last["content"] = s.Content[len(s.Content)-1]
	}
	out = append(out, ev(chunkJSON(last, "stop")), []byte("data: [DONE]\n\n"))
	return out
}

func (f *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.calls++
	f.headers = append(f.headers, r.Header.Clone())
	f.mu.Unlock()
	var req struct {
		Stream bool `json:"stream"`
	}
	raw, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqBody = raw
	f.mu.Unlock()
	_ = json.Unmarshal(raw, &req)
	for k, v := range f.spec.Header {
		w.Header().Set(k, v)
	}
	if f.spec.HeaderDelay > 0 {
		select {
		case <-r.Context().Done():
			f.markCanceled()
			return
		case <-time.After(f.spec.HeaderDelay):
		}
	}
	if f.spec.Status != 0 {
		w.WriteHeader(f.spec.Status)
		_, _ = io.WriteString(w, f.spec.ErrBody)
		return
	}
	if !req.Stream {
		msg := map[string]any{"role": "assistant", "content": strings.Join(f.spec.Content, "")}
		if len(f.spec.Reasoning) > 0 {
			msg["reasoning_content"] = strings.Join(f.spec.Reasoning, "")
		}
		body := mustJSON(map[string]any{"id": "chatcmpl-fake42", "object": "chat.completion", "created": 1700000000, "model": "fake-llm",
			"choices": []any{map[string]any{"index": 0, "message": msg, "finish_reason": "stop"}},
			"usage":   map[string]int{"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59}})
		if f.spec.Whole != nil {
			body = f.spec.Whole
		}
		f.mu.Lock()
		f.body = body
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if n := f.spec.HangAfter; n > 0 {
			_, _ = w.Write(body[:min(n, len(body))])
			_ = http.NewResponseController(w).Flush()
			f.hang(r)
			return
		}
		_, _ = w.Write(body)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("X-Upstream", "fake")
	rc := http.NewResponseController(w)
	var all []byte
	for i, e := range f.spec.events() {
		if f.spec.DropAfter > 0 && i == f.spec.DropAfter {
			_ = rc.Flush()
			if conn, _, err := rc.Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		// The body is recorded before it is written: a client may see
		// the end of the stream before this handler returns.
		all = append(all, e...)
		f.mu.Lock()
		f.body = all
		f.mu.Unlock()
		if f.spec.Pace > 0 && i > 0 {
			time.Sleep(f.spec.Pace)
		}
		step := f.spec.Write
		if step <= 0 {
			step = len(e)
		}
		for len(e) > 0 {
			n := min(step, len(e))
			if _, err := w.Write(e[:n]); err != nil {
				f.markCanceled()
				return
			}
			if err := rc.Flush(); err != nil {
				f.markCanceled()
				return
			}
			e = e[n:]
		}
	}
	if f.spec.Hang || f.spec.HangAfter > 0 {
		f.hang(r)
	}
}

func (f *fakeUpstream) hang(r *http.Request) {
	select {
	case <-r.Context().Done():
		f.markCanceled()
	case <-time.After(60 * time.Second):
	}
}

func (f *fakeUpstream) markCanceled() { f.once.Do(func() { close(f.canceled) }) }

// waitCanceled fails the test unless the upstream request was cancelled;
// the bound only keeps a broken build from hanging.
func (f *fakeUpstream) waitCanceled(t testing.TB) {
	t.Helper()
	select {
	case <-f.canceled:
	case <-time.After(30 * time.Second):
		t.Error("the upstream request was not cancelled")
	}
}

// lastBody is the body of the last request the upstream got.
func (f *fakeUpstream) lastBody() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reqBody
}

func (f *fakeUpstream) streamBody() []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.body
}

// ---- proxy under test ----

type testProxy struct {
	URL   string
	audit *guardtest.JSONLog
	done  chan struct{} // one value per finished request
}

// wait blocks until n requests have been fully handled (the bound only
// keeps a broken build from hanging).
func (p *testProxy) wait(t testing.TB, n int) {
	t.Helper()
	for range n {
		select {
		case <-p.done:
		case <-time.After(60 * time.Second):
			t.Fatal("the proxy did not finish the request")
		}
	}
}

// lastRecord waits for the request to end and returns its audit record.
func (p *testProxy) lastRecord(t testing.TB) map[string]any {
	t.Helper()
	p.wait(t, 1)
	rs := p.audit.Records(t)
	if len(rs) == 0 {
		t.Fatal("no audit record")
	}
	return rs[len(rs)-1]
}

func newTestProxy(t testing.TB, upstream string, mod Moderator, tenant Tenant, edit func(*Config)) *testProxy {
	t.Helper()
	return newTestProxyFor(t, NewHandler, upstream, mod, tenant, edit)
}

// newTestProxyFor is newTestProxy for the handler newHandler makes (the
// Responses API's).
func newTestProxyFor(t testing.TB, newHandler func(Config, Moderator) (http.Handler, error), upstream string, mod Moderator, tenant Tenant, edit func(*Config)) *testProxy {
	t.Helper()
	p := &testProxy{audit: &guardtest.JSONLog{}, done: make(chan struct{}, 16)}
	cfg := Config{Upstream: upstream, DefaultTenant: tenant, Audit: slog.New(slog.NewJSONHandler(p.audit, nil))}
	if edit != nil {
		edit(&cfg)
	}
	h, err := newHandler(cfg, mod)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { p.done <- struct{}{} }()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

// ---- clients ----

func openaiClient(baseURL string) *openai.Client {
	cfg := openai.DefaultConfig("sk-caller")
	cfg.BaseURL = baseURL + "/v1"
	return openai.NewClientWithConfig(cfg)
}

type streamed struct {
	Content, Reasoning string
	Finish             openai.FinishReason
	Chunks             int
}

// streamChat reads a whole stream with the OpenAI client library.
func streamChat(ctx context.Context, baseURL, prompt string) (streamed, error) {
	var out streamed
	st, err := openaiClient(baseURL).CreateChatCompletionStream(ctx, openai.ChatCompletionRequest{
		Model: "fake-llm", Stream: true,
		Messages: []openai.ChatCompletionMessage{{Role: openai.ChatMessageRoleUser, Content: prompt}},
	})
	if err != nil {
		return out, err
	}
	defer st.Close()
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out.Chunks++
		for _, c := range resp.Choices {
			out.Content += c.Delta.Content
			out.Reasoning += c.Delta.ReasoningContent
			if c.FinishReason != "" {
				out.Finish = c.FinishReason
			}
		}
	}
}

// rawPost posts a chat request and returns the raw response.
func rawPost(t testing.TB, url, prompt string, stream bool, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	body := mustJSON(map[string]any{"model": "fake-llm", "stream": stream,
		"messages": []any{map[string]any{"role": "user", "content": prompt}}})
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// ---- chunkings ----

// splitRunes cuts s into deltas of about size bytes, at character
// boundaries (a JSON string carries whole characters).
func splitRunes(s string, size int) []string {
	var out []string
	for len(s) > 0 {
		n := min(size, len(s))
		for n < len(s) && !utf8.RuneStart(s[n]) {
			n++
		}
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

type chunking struct {
	name  string
	delta int // delta size in bytes (rounded up to whole characters)
	write int // transport write size in bytes (0: whole events)
}

// chunkings are the awkward ways the fake upstream streams the text: one
// character per delta written one byte at a time (every multi-byte
// character and every token split); 3-byte deltas (tokens split across
// deltas) written 7 bytes at a time (writes split inside characters);
// many tokens per delta; everything in one delta.
var chunkings = []chunking{
	{"char deltas, 1-byte writes", 1, 1},
	{"3-byte deltas, 7-byte writes", 3, 7},
	{"40-byte deltas", 40, 0},
	{"one delta", 1 << 20, 0},
}
