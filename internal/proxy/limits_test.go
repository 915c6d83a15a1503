package proxy

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// gatedModerator's streams judge the prompt with the real guard, then take
// any response text without verdicts (a guard with unlimited room); their
// first AppendText blocks until gate is closed (a guard busy with a slow
// step, or waiting for KV budget), and the longest text any AppendText was
// handed is recorded.
type gatedModerator struct {
	Moderator
	gate    chan struct{}
	mu      sync.Mutex
	longest int
	calls   int
}

type gatedStream struct {
	Stream
	m *gatedModerator
}

func (g *gatedModerator) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := g.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return gatedStream{s, g}, nil
}

func (s gatedStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	s.m.mu.Lock()
	s.m.calls++
	first := s.m.calls == 1
	s.m.longest = max(s.m.longest, len(text))
	s.m.mu.Unlock()
	if first {
		select {
		case <-s.m.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, nil // a guard with room for any text that flags nothing
}

func (s gatedStream) StartResponse(ctx context.Context, thinking bool) error { return nil }
func (s gatedStream) EndThinking(ctx context.Context) ([]guard.TokenVerdict, error) {
	return nil, nil
}
func (s gatedStream) FlushText(ctx context.Context) ([]guard.TokenVerdict, error) { return nil, nil }
func (s gatedStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return nil, nil
}
func (s gatedStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	return nil, nil
}

// TestPassThroughBacklogBounded: in pass-through, the events go out at
// once but their text waits for the guard; while it is busy (a slow step,
// a KV-budget wait of up to --kv-budget-wait) that text is bounded like
// held events, by four times the request cap (upstream_too_large past it).
// It once piled up without bound: the guard was handed 8x the cap in one
// call, the proxy holding an upstream's whole output in memory.
func TestPassThroughBacklogBounded(t *testing.T) {
	m := tinyModel(t)
	const reqCap = 16 << 10 // maxResponseBytes = 64 KiB
	limit := 4 * reqCap
	var content []string
	for i := range 64 {
		content = append(content, strings.Repeat(fmt.Sprintf("word%d ", i%10), 1300)) // ~8 KiB each
	}
	content = append(content, " MARKER-END")
	up := newFakeUpstream(t, upstreamSpec{Content: content})
	mod := &gatedModerator{Moderator: Direct(m), gate: make(chan struct{})}
	p := newTestProxy(t, up.URL, mod, Tenant{Policy: safePolicy(m), Mode: PassThrough}, func(c *Config) { c.MaxRequestBytes = reqCap })

	body := mustJSON(map[string]any{"model": "fake-llm", "stream": true,
		"messages": []any{map[string]any{"role": "user", "content": "hello"}}})
	resp, err := http.Post(p.URL+"/v1/chat/completions", "application/json", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	seen := make(chan struct{})
	var all strings.Builder
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 8<<20)
		once := sync.Once{}
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "MARKER-END") {
				once.Do(func() { close(seen) })
			}
		}
	}()
	// The guard is held until pass-through has forwarded the whole text,
	// or the stream ended.
	select {
	case <-seen:
	case <-readDone: // the stream ended first
	case <-time.After(30 * time.Second):
	}
	close(mod.gate)
	<-readDone
	p.wait(t, 1)
	mod.mu.Lock()
	longest := mod.longest
	mod.mu.Unlock()
	if longest > limit {
		t.Fatalf("pass-through handed the guard %d bytes of text queued in one backlog while it was busy (the proxy held it all in memory); the documented bound on what waits is %d bytes", longest, limit)
	}
	if !strings.Contains(all.String(), `"code":"upstream_too_large"`) {
		t.Errorf("the stream did not end with upstream_too_large: %q", tail(all.String(), 300))
	}
}

// TestHugeEventTooLarge: an upstream event past the proxy's per-event
// bound (maxEventBytes, 4 MiB: one line that never ends, a 100 MB event)
// ends the stream with upstream_too_large, as every other size bound does,
// not upstream_disconnected (a dropped connection, worth a retry). Nothing
// of the event reaches the client.
func TestHugeEventTooLarge(t *testing.T) {
	m := tinyModel(t)
	role := append(append([]byte("data: "), chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil)...), "\n\n"...)
	huge := append([]byte("data: "), strings.Repeat("A", 5<<20)...) // no newline, ever
	up := newFakeUpstream(t, upstreamSpec{Events: [][]byte{role, huge}, Hang: true})
	for _, mode := range []Mode{HoldBack, PassThrough} {
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: mode}, nil)
		_, body := rawPost(t, p.URL, "hello", true, nil)
		p.wait(t, 1)
		if strings.Contains(string(body), "AAAA") {
			t.Fatalf("%v: bytes of the oversized event reached the client", mode)
		}
		if !strings.Contains(string(body), `"code":"upstream_too_large"`) {
			t.Errorf("%v: an upstream event over the proxy's 4 MiB bound ended the stream with %q; want the error code upstream_too_large", mode, tail(string(body), 300))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestPassThroughBacklogCountsOps: pass-through's text waiting for the
// guard is bounded as held events are, each op counted with
// heldEventOverhead: counting text bytes alone, an upstream of one-character
// events queued one feedOp (and its string) per byte, ~40x the memory.
func TestPassThroughBacklogCountsOps(t *testing.T) {
	j := &judge{wake: make(chan struct{}, 1)} // no run goroutine: the guard is busy
	const limit = 64 << 10
	accepted := 0
	for accepted < 1<<20 && j.push([]feedOp{{text: "a"}}, false, limit) {
		accepted++
	}
	if max := limit / heldEventOverhead; accepted > max {
		t.Fatalf("%d one-byte pushes queued under a %d-byte bound (held events: at most %d)", accepted, limit, max)
	}
}
