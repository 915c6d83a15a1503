package proxy

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
	"time"
)

// toolDeltaStream is a stream of the given deltas (JSON objects), then a
// finish chunk and [DONE].
func toolDeltaStream(deltas ...string) [][]byte {
	var evs [][]byte
	for _, d := range deltas {
		evs = append(evs, chunkEvent(`[{"index":0,"delta":`+d+`,"finish_reason":null}]`))
	}
	return append(evs, chunkEvent(`[{"index":0,"delta":{},"finish_reason":"tool_calls"}]`), sseData("[DONE]"))
}

// TestToolCallGeminiSignature: Gemini (2.5 / 3, thinking) answers through
// its OpenAI compatibility with each tool call carrying "extra_content":
// {"google": {"thought_signature": "..."}} (Vertex: "vertex"), an opaque
// signature the client must send back on the next turn: relayed as it is.
func TestToolCallGeminiSignature(t *testing.T) {
	m := tinyModel(t)
	const call = `{"extra_content":{"google":{"thought_signature":"CiQBjz1rX0YcSGVsbG8gd29ybGQ="}},` +
		`"function":{"arguments":"{\"city\":\"Paris\"}","name":"get_weather"},"id":"function-call-1","type":"function"}`
	t.Run("stream", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(`{"role":"assistant","tool_calls":[` + strings.Replace(call, `{`, `{"index":0,`, 1) + `]}`)})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
		resp, body := rawPost(t, p.URL, "Hello", true, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, up.streamBody()) || audit["event"] != EventAllowed {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
		}
	})
	t.Run("whole", func(t *testing.T) {
		whole := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"gemini-3-flash","choices":[{"finish_reason":"tool_calls","index":0,` +
			`"message":{"role":"assistant","tool_calls":[` + call + `]}}]}`)
		up := newFakeUpstream(t, upstreamSpec{Whole: whole})
		p := newTestProxy(t, up.URL, Direct(m), Tenant{Policy: safePolicy(m)}, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); resp.StatusCode != 200 || !bytes.Equal(body, whole) || audit["event"] != EventAllowed {
			t.Fatalf("status %d, audit %v, body %s", resp.StatusCode, audit, body)
		}
	})
}

// TestToolCallResumedNotAllowed: clients merge tool-call deltas by index
// (openai-python's accumulate_delta, openai-node, LiteLLM): a piece for a
// call that resumes after another call (or after content) is appended to
// that call's arguments, so text split across the resumption ("EV" ...
// "IL") is "EVIL" in the client's call. openai-python also merges an
// index that does not exist yet into position len(list) (list.insert) and
// a negative index into the last call. None of these streams is allowed.
func TestToolCallResumedNotAllowed(t *testing.T) {
	m := tinyModel(t)
	for _, c := range []struct {
		name   string
		deltas []string
	}{
		{"resumed after another call", []string{
			`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"tool_calls":[{"index":1,"id":"b","type":"function","function":{"name":"noop","arguments":"{}"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"IL\"}"}}]}`,
		}},
		{"resumed after content", []string{
			`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"content":"ok"}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"IL\"}"}}]}`,
		}},
		{"openai-python: index 1 before index 0", []string{
			`{"tool_calls":[{"index":1,"id":"a","type":"function","function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"tool_calls":[{"index":0,"function":{"arguments":"IL\"}"}}]}`,
		}},
		{"openai-python: index -1 is the last call", []string{
			`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":"{\"text\": \"EV"}}]}`,
			`{"tool_calls":[{"index":-1,"function":{"arguments":"IL\"}"}}]}`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(c.deltas...)})
			p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
			_, body := rawPost(t, p.URL, "Hello", true, nil)
			if audit := p.lastRecord(t); audit["event"] == EventAllowed {
				t.Errorf("the client assembles a call with \"EVIL\" in its arguments; the guard allowed it:\n%s", body)
			}
		})
	}
}

// TestToolCallResumedNoContentFilterAfterHalf: in hold-back a call's events
// go once the call closed (another call or text began); a call that then
// resumes with flagged text must not leave its first half with the client
// followed by an ordinary content_filter finish, as if the guard had
// judged the call the client assembles.
func TestToolCallResumedNoContentFilterAfterHalf(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Pace: 30 * time.Millisecond, Events: toolDeltaStream(
		`{"role":"assistant","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"run_shell","arguments":"{\"cmd\": \"rm -rf /home/user/projects"}}]}`,
		`{"tool_calls":[{"index":1,"id":"b","type":"function","function":{"name":"noop","arguments":"{}"}}]}`,
		`{"tool_calls":[{"index":1,"function":{"arguments":""}}]}`,
		`{"tool_calls":[{"index":0,"function":{"arguments":" && echo EVIL EVIL EVIL\"}"}}]}`,
	)})
	p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	_, body := rawPost(t, p.URL, "Hello", true, nil)
	audit := p.lastRecord(t)
	if audit["event"] == EventResponseFlagged && bytes.Contains(body, []byte("run_shell")) {
		t.Errorf("the flagged call's first half reached the client before a content_filter finish:\n%s", body)
	}
}

// TestToolCallObjectArgumentsMerged: arguments sent as a JSON object are
// merged by openai-python's accumulate_delta key by key, strings
// concatenated: {"t":"EV"} then {"t":"IL"} is {"t":"EVIL"} in the client;
// such a stream is not allowed.
func TestToolCallObjectArgumentsMerged(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
		`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":{"t":"EV"}}}]}`,
		`{"tool_calls":[{"index":0,"function":{"arguments":{"t":"IL"}}}]}`,
	)})
	p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	_, body := rawPost(t, p.URL, "Hello", true, nil)
	if audit := p.lastRecord(t); audit["event"] == EventAllowed {
		t.Errorf("openai-python assembles {\"t\": \"EVIL\"}; the guard allowed it:\n%s", body)
	}
}

// TestToolCallObjectArgumentsEscaped: arguments sent as a JSON object
// whose escapes ("\u0045VIL") the client's JSON parser decodes into the
// text the agent gets ("EVIL") are not allowed with the escapes judged.
func TestToolCallObjectArgumentsEscaped(t *testing.T) {
	m := tinyModel(t)
	t.Run("whole", func(t *testing.T) {
		whole := []byte(`{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"tool_calls",` +
			`"message":{"role":"assistant","content":null,"tool_calls":[{"id":"a","type":"function","function":{"name":"write","arguments":{"text":"\u0045VIL"}}}]}}]}`)
		up := newFakeUpstream(t, upstreamSpec{Whole: whole})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
		_, body := rawPost(t, p.URL, "Hello", false, nil)
		if audit := p.lastRecord(t); audit["event"] == EventAllowed {
			t.Errorf("the client reads {\"text\": \"EVIL\"}; the guard allowed it:\n%s", body)
		}
	})
	t.Run("stream", func(t *testing.T) {
		up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
			`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"write","arguments":{"text":"\u0045VIL"}}}]}`,
		)})
		p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
		_, body := rawPost(t, p.URL, "Hello", true, nil)
		if audit := p.lastRecord(t); audit["event"] == EventAllowed {
			t.Errorf("the client reads {\"text\": \"EVIL\"}; the guard allowed it:\n%s", body)
		}
	})
}

// TestToolCallNameAfterArguments: openai-python concatenates a call's name
// pieces: "EV", then "IL" after the arguments, is the name "EVIL" in the
// client; such a stream is not allowed.
func TestToolCallNameAfterArguments(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: toolDeltaStream(
		`{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"EV","arguments":"{}"}}]}`,
		`{"tool_calls":[{"index":0,"function":{"name":"IL"}}]}`,
	)})
	p := newTestProxy(t, up.URL, markModerator{Direct(m)}, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	_, body := rawPost(t, p.URL, "Hello", true, nil)
	if audit := p.lastRecord(t); audit["event"] == EventAllowed {
		t.Errorf("openai-python assembles the name \"EVIL\"; the guard allowed it:\n%s", body)
	}
}

// TestToolCallEmptyPiecesNotKept: in pass-through an event is written at
// once and nothing of it should stay; a tool-call piece without text
// ({"index":0}) feeds nothing, so neither the guard's room (outOfRoom) nor
// the queue limit (hold-back only) would end a stream of them: the relay
// must not keep them, or an upstream grows the proxy's memory without
// bound.
func TestToolCallEmptyPiecesNotKept(t *testing.T) {
	m := tinyModel(t)
	ext, err := NewExternal(Config{DefaultTenant: Tenant{Policy: safePolicy(m), Mode: PassThrough}}, Direct(m))
	if err != nil {
		t.Fatal(err)
	}
	c := startAnswer(t, ext, true)
	rl := c.Stream(nil)
	rl.Push(chunkEvent(`[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"{}"}}]}}]`))
	rl.Sync(0, nil)
	_ = rl.Take()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const n = 100000
	empty := chunkEvent(`[{"index":0,"delta":{"tool_calls":[{"index":0}]}}]`)
	batch := bytes.Repeat(empty, 1000)
	for range n / 1000 {
		rl.Push(batch)
		rl.Sync(0, nil)
		_ = rl.Take()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d bytes over %d textless events (%d held by the feeder)", grown, n, len(rl.r.feed.callEvs))
	// Without the pieces kept, what grows is the relay's working state:
	// about 50 KB here, against 4–5 MB with every event kept.
	if held := len(rl.r.feed.callEvs); held > 1 || grown > 1<<20 {
		t.Errorf("the relay keeps %d bytes for %d events it already wrote (%d events held for the open call)", grown, n, held)
	}
}

// TestToolCallExternalHoldBack: the External driver (Envoy's ext_proc in
// STREAMED mode), which answers each body chunk with what hold-back
// released once it was judged, releases a tool call whole or not at all:
// a flagged call gives its chunks nothing of it, then the content_filter
// finish, while the words before it go at once; a safe call's events are
// relayed byte for byte.
func TestToolCallExternalHoldBack(t *testing.T) {
	m := tinyModel(t)
	for _, payload := range []string{"EVIL", "fine"} {
		t.Run(payload, func(t *testing.T) {
			ext, err := NewExternal(Config{DefaultTenant: Tenant{Policy: safePolicy(m), Mode: HoldBack}}, markModerator{Direct(m)})
			if err != nil {
				t.Fatal(err)
			}
			c := startAnswer(t, ext, true)
			rl := c.Stream(nil)
			var got, sent []byte
			events := toolCallStream(payload)
			finish := len(events) - 2 // the finish chunk, then [DONE]
			for i, ev := range events {
				rl.Push(ev)
				sent = append(sent, ev...)
				rl.Sync(5*time.Second, nil) // until judged and released
				got = append(got, rl.Take()...)
				if i < finish && bytes.Contains(got, []byte("tool_calls")) {
					t.Fatalf("after event %d, before the call's end, the client has part of it:\n%s", i, got)
				}
			}
			rl.End()
			select {
			case <-rl.Done():
			case <-time.After(30 * time.Second):
				t.Fatal("the relay did not end")
			}
			got = append(got, rl.Take()...)
			switch payload {
			case "EVIL":
				if bytes.Contains(got, []byte("tool_calls")) || bytes.Contains(got, []byte("EVIL")) ||
					!bytes.Contains(got, []byte(`"finish_reason":"content_filter"`)) || !bytes.Contains(got, []byte("Sure, I will write it down.")) {
					t.Errorf("flagged call: the client got\n%s", got)
				}
			default:
				if !bytes.Equal(got, sent) {
					t.Errorf("safe call: the client got\n%s\nthe upstream sent\n%s", got, sent)
				}
			}
		})
	}
}
