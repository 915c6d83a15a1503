package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
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
	// An append that would need more than the budget is refused.
	long := strings.Repeat("word ", 100)
	if code, _ := h.do("POST", "/v1/streams/"+s1.ID+"/append", "", map[string]any{"text": long}, &e); code != 429 || e.Error.StreamEnded {
		t.Fatalf("long append: status %d %+v", code, e.Error)
	}
	if code, _ := h.do("POST", "/v1/streams/"+s1.ID+"/append", "", map[string]any{"text": "short"}, nil); code != 200 {
		t.Fatalf("short append after the refusal: status %d", code)
	}
	h.do("DELETE", "/v1/streams/"+s1.ID, "", nil, nil)
	if code, _ := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, nil); code != 201 {
		t.Fatalf("after close: status %d", code)
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
