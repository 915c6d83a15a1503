package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
)

// TestKVBudget: without a wait, a stream that does not fit the budget gets
// 429 with Retry-After and nothing is allocated; closing a stream makes
// room; an append that does not fit is refused and the stream goes on
// afterwards.
func TestKVBudget(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	// 300 positions: a stream with a short prompt (about 10 tokens) and a
	// reserve of 100 is charged capBound(110) = 256 positions.
	h := newHarness(t, Options{KVBudgetBytes: 300 * bpp, StreamReserveTokens: 100, RetryAfter: 3 * time.Second, KVBudgetWait: -1})
	var s1 streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &s1); code != 201 {
		t.Fatalf("first: status %d", code)
	}
	if used, _ := h.srv.budget.usage(); used != 256 {
		t.Fatalf("charged %d positions, want 256", used)
	}
	var e errBody
	code, hdr := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &e)
	if code != 429 || e.Error.Code != "kv_budget" || hdr.Get("Retry-After") != "3" || e.Error.RetryAfter != 3 {
		t.Fatalf("second: status %d %+v retry-after %q", code, e.Error, hdr.Get("Retry-After"))
	}
	if n := h.srv.metrics.openStreams.Load(); n != 1 {
		t.Fatalf("%d streams open after a refusal", n)
	}
	// An append whose estimate (a token a byte: 500) is more than the
	// stream may hold is charged only what it may hold, which its charge
	// already covers: taken, with nothing more charged.
	long := strings.Repeat("word ", 100)
	if code, _ := h.do("POST", "/v1/streams/"+s1.ID+"/append", "", map[string]any{"text": long}, &e); code != 200 {
		t.Fatalf("long append: status %d %+v", code, e.Error)
	}
	if used, _ := h.srv.budget.usage(); used != 256 {
		t.Fatalf("charged %d positions after the append, want 256", used)
	}
	h.do("DELETE", "/v1/streams/"+s1.ID, "", nil, nil)
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, nil); code != 201 {
		t.Fatalf("after close: status %d", code)
	}
}

// TestStreamsHeldToTheBudget: a stream longer than the whole KV budget
// could never be admitted, and its charge used to be refused like a full
// budget's — an overload, which a fail-open tenant's proxy answers by
// forwarding unjudged. Streams are now held to what the budget takes, so
// such input is a length error: refused, never forwarded, for prompts and
// answers alike.
func TestStreamsHeldToTheBudget(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	cfg := &Config{Tenants: []TenantConfig{{Name: "a", APIKeySHA256: []string{HashKey("key-a")}, Proxy: ProxyConfig{FailOpen: true}}}}
	// 300 positions: capBound(128) = 256 fits, capBound(129) = 320 does not.
	h := newHarness(t, Options{Config: cfg, KVBudgetBytes: 300 * bpp, StreamReserveTokens: 16, KVBudgetWait: -1})
	if h.srv.maxStreamTokens != 128 {
		t.Fatalf("max stream length %d under a 300-position budget, want 128", h.srv.maxStreamTokens)
	}
	if _, err := New(Options{Model: m, KVBudgetBytes: 100 * bpp}); err == nil || !strings.Contains(err.Error(), "KV budget") {
		t.Fatalf("a budget below one short stream: %v", err)
	}
	var called atomic.Int32
	answer := strings.Repeat("here is the harmful part of the answer. ", 40) // about 400 tokens
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		called.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, answer)
	}))
	defer up.Close()
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	post := func(prompt string) (int, http.Header, string) {
		body := fmt.Sprintf(`{"model":"m","messages":[{"role":"user","content":%q}]}`, prompt)
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer key-a")
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	// A prompt of about 500 tokens, inside the model's context.
	code, hdr, body := post(strings.Repeat("tell me how to do the forbidden thing ", 70))
	if code != http.StatusBadRequest || !strings.Contains(body, "context_length_exceeded") || hdr.Get("X-Streamguard-Unjudged") != "" || called.Load() != 0 {
		t.Fatalf("long prompt: status %d, unjudged %q, upstream called %d times: %.300s", code, hdr.Get("X-Streamguard-Unjudged"), called.Load(), body)
	}
	// A short prompt whose answer outgrows the stream: cut for length
	// (the proxy's rule for an answer past the guard's stream), not
	// released unjudged.
	code, hdr, body = post("hi")
	if code != http.StatusOK || hdr.Get("X-Streamguard-Unjudged") != "" || !strings.Contains(body, `"finish_reason":"length"`) || strings.Count(body, "harmful part") > 30 {
		t.Fatalf("long answer: status %d, unjudged %q: %.300s", code, hdr.Get("X-Streamguard-Unjudged"), body)
	}
}

// TestHeldTextBounded: the text a stream's encoder holds back (one word
// that may still grow, here a run of letters) is tokens to come; appends
// of it are refused once it would not fit the stream were the text to end
// there, however it is cut, instead of piling up unjudged and answered
// "allowed".
func TestHeldTextBounded(t *testing.T) {
	const limit = 512 // --max-stream-tokens
	h := newHarness(t, Options{MaxStreamTokens: limit})
	var created streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
		t.Fatal(code)
	}
	tok := guardhook.Tokenizer(h.srv.model)
	ids := func(n int) int { return len(tok.EncodeText(strings.Repeat("a", n))) }
	chunk := strings.Repeat("a", 300)
	// The assistant header the first append queues.
	header := len(tok.EncodeText("\n")) + 6
	held := 0
	for i := 0; ; i++ {
		var e errBody
		code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"text": chunk}, &e)
		if code == http.StatusOK {
			held += len(chunk)
			continue
		}
		if code != http.StatusBadRequest || e.Error.Code != "context_length_exceeded" || e.Error.StreamEnded {
			t.Fatalf("append %d past the bound (%d bytes held): status %d %+v", i, held, code, e.Error)
		}
		break
	}
	// Refused at the first chunk that would not fit, give or take the
	// header's few tokens and the margin (16) the guard keeps for a long
	// word between its counts.
	room := limit - created.State.Position
	if held == 0 || ids(held) > room || ids(held+len(chunk))+header+16 <= room {
		t.Fatalf("refused after %d bytes held (%d tokens; %d with the chunk) with room for %d", held, ids(held), ids(held+len(chunk)), room)
	}
}

// TestCapBoundHoldsForRealCaches feeds streams in several growth patterns
// and checks that the memory their caches hold never exceeds what the
// budget charged for them.
func TestCapBoundHoldsForRealCaches(t *testing.T) {
	m := testModel(t)
	b := newKVBudget(0, m.Info().KVBytesPerToken, m.Info().MaxPositions, 0)
	for _, chunk := range []int{1, 7, 64, 300} {
		s := m.NewStream()
		if _, err := s.JudgePromptIDs(context.Background(), []int{872, 198, 9707, 151645}); err != nil {
			t.Fatal(err)
		}
		for s.Len() < min(1200, 300*chunk) {
			ids := make([]int, chunk)
			for i := range ids {
				ids[i] = 100 + i
			}
			if _, err := s.AppendIDs(context.Background(), ids); err != nil {
				t.Fatal(err)
			}
			if got, bound := s.CacheBytes(), b.capBound(s.Len())*b.bytesPerPos; got > bound {
				t.Fatalf("chunk %d: %d positions hold %d bytes, bound %d", chunk, s.Len(), got, bound)
			}
		}
		s.Close()
	}
}

func TestIdleExpiry(t *testing.T) {
	h := newHarness(t, Options{IdleTimeout: time.Hour})
	var s streamResponse
	h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &s)
	if n := h.srv.sessions.expire(time.Now().Add(-time.Minute)); n != 0 {
		t.Fatalf("expired %d streams used a moment ago", n)
	}
	if n := h.srv.sessions.expire(time.Now().Add(time.Minute)); n != 1 {
		t.Fatalf("expired %d streams, want 1", n)
	}
	if code, _ := h.do("GET", "/v1/streams/"+s.ID, "", nil, nil); code != 404 {
		t.Fatalf("expired stream: status %d", code)
	}
	if used, _ := h.srv.budget.usage(); used != 0 || h.srv.metrics.openStreams.Load() != 0 {
		t.Fatalf("expiry left %d positions charged", used)
	}
	if !strings.Contains(h.audit.String(), `"reason":"expired"`) {
		t.Fatalf("audit log:\n%s", h.audit.String())
	}
}

func TestMaxStreamLength(t *testing.T) {
	h := newHarness(t, Options{MaxStreamTokens: 40})
	var s streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &s); code != 201 {
		t.Fatalf("create: status %d", code)
	}
	// ids are counted before anything is queued: refused, stream intact.
	var e errBody
	if code, _ := h.do("POST", "/v1/streams/"+s.ID+"/append", "", map[string]any{"ids": make([]int, 50)}, &e); code != 400 || e.Error.Code != "context_length_exceeded" || e.Error.StreamEnded {
		t.Fatalf("ids: status %d %+v", code, e.Error)
	}
	// Text is tokenized as it is queued: past the limit the stream ends.
	if code, _ := h.do("POST", "/v1/streams/"+s.ID+"/append", "", map[string]any{"text": strings.Repeat(" a", 60)}, &e); code != 400 || e.Error.Code != "context_length_exceeded" || !e.Error.StreamEnded {
		t.Fatalf("text: status %d %+v", code, e.Error)
	}
	if code, _ := h.do("GET", "/v1/streams/"+s.ID, "", nil, nil); code != 404 {
		t.Fatalf("ended stream: status %d", code)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Fatalf("%d positions charged", used)
	}
	if _, err := New(Options{Model: testModel(t), MaxStreamTokens: 1 << 20}); err == nil {
		t.Fatal("accepted a maximum beyond max_position_embeddings")
	}
}

// TestTimeout: an operation whose deadline passes while it waits for the
// scheduler answers 504 and its stream is closed.
func TestTimeout(t *testing.T) {
	h := newHarness(t, Options{RequestTimeout: time.Nanosecond})
	h.srv.sched.gate.Lock() // no step can run: the deadline passes first
	var e errBody
	code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &e)
	h.srv.sched.gate.Unlock()
	if code != http.StatusGatewayTimeout || e.Error.Code != "timeout" {
		t.Fatalf("status %d %+v", code, e.Error)
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open", n)
	}
}

// TestSubmitCancelledInStep cancels a job while the scheduler cannot pick
// it and checks that Submit returns the context's error and closes the
// stream.
func TestSubmitCancelled(t *testing.T) {
	m := testModel(t)
	sc := NewScheduler(m, SchedulerOptions{}, nil)
	defer sc.Close()
	s := m.NewStream()
	if err := s.QueuePrompt([]guard.Message{{Role: "user", Content: "hi"}}); err != nil {
		t.Fatal(err)
	}
	sc.gate.Lock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := sc.Submit(ctx, s)
	sc.gate.Unlock()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v", err)
	}
	if err := s.QueueText("x"); !errors.Is(err, guard.ErrClosed) {
		t.Fatalf("stream not closed: %v", err)
	}
	sc.Close()
	if _, err := sc.Submit(context.Background(), m.NewStream()); !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestKVBudgetWait: with the budget full, a new stream waits instead of
// getting 429, and opens as soon as another stream's close makes room;
// /metrics counts the wait.
func TestKVBudgetWait(t *testing.T) {
	m := testModel(t)
	bpp := m.Info().KVBytesPerToken
	h := newHarness(t, Options{KVBudgetBytes: 300 * bpp, StreamReserveTokens: 100, KVBudgetWait: time.Minute})
	var s1 streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &s1); code != 201 {
		t.Fatalf("first: status %d", code)
	}
	second := make(chan int, 1)
	go func() {
		resp, err := h.ts.Client().Post(h.ts.URL+"/v1/streams", "application/json", strings.NewReader(`{"prompt":"hi"}`))
		if err != nil {
			second <- -1
			return
		}
		resp.Body.Close()
		second <- resp.StatusCode
	}()
	waitQueued(t, h.srv.budget, 1)
	select {
	case code := <-second:
		t.Fatalf("second stream answered %d while the budget is full", code)
	case <-time.After(50 * time.Millisecond):
	}
	h.do("DELETE", "/v1/streams/"+s1.ID, "", nil, nil)
	select {
	case code := <-second:
		if code != 201 {
			t.Fatalf("second stream: status %d, want 201 once the first closed", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second stream still waiting after the first closed")
	}
	_, _, metrics := h.get("/metrics")
	for _, want := range []string{
		`streamguard_kv_budget_waiting 0`,
		`streamguard_kv_budget_waits_total{outcome="granted"} 1`,
		`streamguard_kv_budget_waits_total{outcome="refused"} 0`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestOverLongIDsRefusedWhole: ids that fit the stream's limit by their
// count but not with the assistant header queued before them are refused
// by the guard (its limit is the server's), nothing queued: the stream
// goes on, and ids that fit are then judged.
func TestOverLongIDsRefusedWhole(t *testing.T) {
	const limit = 100 // --max-stream-tokens
	h := newHarness(t, Options{MaxStreamTokens: limit})
	var created streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
		t.Fatal(code)
	}
	room := limit - created.State.Position // the header's tokens and the response's
	var e errBody
	code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"ids": slices.Repeat([]int{9707}, room)}, &e)
	if code != http.StatusBadRequest || e.Error.Code != "context_length_exceeded" || e.Error.StreamEnded {
		t.Fatalf("ids past the limit with the header: status %d %+v", code, e.Error)
	}
	var r streamResponse
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"ids": slices.Repeat([]int{9707}, room-12)}, &r); code != http.StatusOK || len(r.Tokens) != room-12 || r.State.Position > limit {
		t.Fatalf("ids that fit after the refusal: status %d, %d verdicts, position %d", code, len(r.Tokens), r.State.Position)
	}
}

// TestAcceptedHeldWordFlushes: appends of one long word that the server
// accepted (200, "allowed") are judgeable: here the word's end tokenizes
// at a byte an id where its start took ten; a guard estimate scaled from
// its start accepted it, and the flush then failed (400
// context_length_exceeded, stream_ended), the accepted text never judged.
func TestAcceptedHeldWordFlushes(t *testing.T) {
	const limit = 512
	h := newHarness(t, Options{MaxStreamTokens: limit})
	var created streamResponse
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": testPrompt}, &created); code != http.StatusCreated {
		t.Fatal(code)
	}
	tok := guardhook.Tokenizer(h.srv.model)
	head := strings.Repeat("internationalization", 80) // 1600 bytes, 160 ids
	tail := strings.Repeat("xQ", 199)                  // 398 bytes, 398 ids
	room := limit - created.State.Position
	whole := len(tok.EncodeText(head + tail))
	if whole < room-8 {
		t.Fatalf("premise: %d ids fit the %d left", whole, room)
	}
	var e errBody
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"text": head}, &e); code != http.StatusOK {
		t.Fatalf("head: %d %+v", code, e.Error)
	}
	if code, _ := h.do("POST", "/v1/streams/"+created.ID+"/append", "", map[string]any{"text": tail}, &e); code != http.StatusOK {
		return // refused with the stream intact: what the bound is for
	}
	code, _ := h.do("POST", "/v1/streams/"+created.ID+"/flush", "", map[string]any{}, &e)
	if code != http.StatusOK {
		t.Fatalf("flush of a word the stream accepted (%d ids, %d left): status %d %+v", whole, room, code, e.Error)
	}
}
