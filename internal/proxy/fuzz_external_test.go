package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzExternalAnswer drives a whole exchange through External (what
// internal/extproc uses, and the same judging as the HTTP handler): a
// request, then an upstream answer — whole (chat completion or Responses
// object) or an event stream pushed in two pieces cut anywhere — judged by
// a moderator that flags any text completing "EVIL". It checks that the
// exchange ends (no panic, no hang) and, in hold-back, that no text field a
// client reads (in choices, output, or a Responses event's texts) carries
// "EVIL" followed by more text (which the moderator flags) in one piece.
func FuzzExternalAnswer(f *testing.F) {
	chatWhole := mustJSON(map[string]any{"id": "chatcmpl-fake42", "object": "chat.completion", "created": 1700000000, "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "message": map[string]any{"role": "assistant", "content": "Hello there EVIL and more words", "reasoning_content": "think"}, "finish_reason": "stop"}},
		"usage":   map[string]int{"prompt_tokens": 9, "completion_tokens": 50, "total_tokens": 59}})
	chatStream := bytes.Join(upstreamSpec{Reasoning: []string{"hm"}, Content: []string{"Hello", " there EVIL and", " more words"}}.events(), nil)
	rs := respSpec{Summary: []string{"Think"}, Content: []string{"Hello", " there EVIL and", " more"}, Call: "f", ArgDeltas: []string{`{"a":`, `"\u0045"}`}}
	respStream := bytes.Join(rs.events(), nil)
	respWhole := rs.whole()
	f.Add(uint8(0), uint16(10), chatWhole)
	f.Add(uint8(2), uint16(37), chatStream)
	f.Add(uint8(1), uint16(0), respWhole)
	f.Add(uint8(3), uint16(101), respStream)
	f.Add(uint8(3|8), uint16(5), respStream)
	f.Add(uint8(2|4), uint16(5), chatStream)

	m := tinyModel(f)
	ext, err := NewExternal(Config{DefaultTenant: Tenant{Name: "default", Policy: safePolicy(m)},
		Audit: slog.New(slog.NewJSONHandler(io.Discard, nil))}, markModerator{Direct(m)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, flags uint8, cut uint16, body []byte) {
		responses, stream, passThrough, completion := flags&1 != 0, flags&2 != 0, flags&4 != 0, flags&8 != 0
		tenant := &Tenant{Name: "default", Policy: safePolicy(m)}
		if passThrough {
			tenant.Mode = PassThrough
		}
		if completion {
			tenant.Refusal = RefusalCompletion
		}
		var call *Call
		var ans *Answer
		if responses {
			req := mustJSON(map[string]any{"model": "m", "input": "hello", "stream": stream})
			call, ans = ext.StartResponses(context.Background(), tenant, http.Header{}, req)
		} else {
			req := mustJSON(map[string]any{"model": "m", "stream": stream, "messages": []any{map[string]any{"role": "user", "content": "hello"}}})
			call, ans = ext.Start(context.Background(), tenant, http.Header{}, req)
		}
		defer call.Close()
		if ans != nil {
			t.Fatalf("request refused: %d %s", ans.Status, ans.Body)
		}
		ct := "application/json"
		if stream {
			ct = "text/event-stream"
		}
		kind, _ := call.Response(200, http.Header{"Content-Type": {ct}})
		var read []byte
		switch kind {
		case WholeResponse:
			a := call.Whole(200, body, false)
			if a != nil {
				return // answered otherwise: a cut, or an error
			}
			read = body
		case StreamResponse:
			rl := call.Stream(nil)
			c := min(int(cut), len(body))
			rl.Push(body[:c])
			rl.Push(body[c:])
			rl.End()
			select {
			case <-rl.Done():
			case <-time.After(20 * time.Second):
				t.Fatalf("the relay did not end")
			}
			read = rl.Take()
		default:
			t.Fatalf("kind %d", kind)
		}
		if passThrough {
			return
		}
		// What a client reads: the whole body, or each event's data.
		var docs [][]byte
		if kind == WholeResponse {
			docs = [][]byte{read}
		} else {
			for _, line := range bytes.Split(read, []byte("\n")) {
				if d, ok := bytes.CutPrefix(line, []byte("data:")); ok {
					docs = append(docs, bytes.TrimSpace(d))
				}
			}
		}
		for _, d := range docs {
			v, err := exactDecode(d)
			if err != nil {
				continue
			}
			var walk func(v any, key string)
			walk = func(v any, key string) {
				switch v := v.(type) {
				case string:
					switch key {
					case "content", "reasoning_content", "reasoning", "refusal", "text", "delta", "arguments", "output_text":
						if i := strings.Index(v, "EVIL"); i >= 0 && len(strings.TrimSpace(v[i+4:])) >= 8 {
							t.Fatalf("a client reads %s %q, which the guard flags (answer %q)", key, v, read)
						}
					}
				case []any:
					for _, e := range v {
						walk(e, key)
					}
				case map[string]any:
					for k, e := range v {
						walk(e, k)
					}
				}
			}
			// Only where a client reads the answer: a completion's
			// choices, a Responses object's output (whole or in an
			// event's response) and a Responses event's texts.
			top, _ := v.(map[string]any)
			for _, k := range []string{"choices", "output", "output_text", "delta", "text", "arguments", "part", "item"} {
				walk(top[k], k)
			}
			if r, ok := top["response"].(map[string]any); ok {
				walk(r["output"], "output")
				walk(r["output_text"], "output_text")
			}
		}
	})
}

// TestResponsesItemMembersOfOtherTypesRefused: an input item may carry
// only its own type's members. A message with a call's "output", or a call
// with a message's "content", would be forwarded with text the guard
// passes over (FuzzParseResponsesRequest found the first).
func TestResponsesItemMembersOfOtherTypesRefused(t *testing.T) {
	for _, item := range []string{
		`{"role":"user","content":"hello","output":"EVIL TEXT"}`,
		`{"type":"message","role":"user","content":"hello","arguments":"EVIL TEXT"}`,
		`{"type":"function_call","call_id":"c1","name":"f","arguments":"{}","content":"EVIL TEXT"}`,
		`{"type":"function_call_output","call_id":"c1","output":"ok","name":"EVIL TEXT"}`,
		`{"type":"reasoning","summary":[],"output":"EVIL TEXT"}`,
		`{"type":"custom_tool_call","call_id":"c1","name":"f","input":"x","arguments":"EVIL TEXT"}`,
	} {
		body := []byte(`{"input":[` + item + `]}`)
		if _, err := parseResponsesRequest(body); err == nil || !strings.Contains(err.Error(), "has no member") {
			t.Errorf("%s: %v, want a refusal naming the member", item, err)
		}
	}
	// Each type's own members pass.
	ok := `{"input":[{"role":"user","content":"hello"},{"type":"reasoning","summary":[{"text":"t"}]},` +
		`{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"ok"},` +
		`{"type":"custom_tool_call","call_id":"c2","name":"g","input":"x"},{"type":"custom_tool_call_output","call_id":"c2","output":"ok"}]}`
	if _, err := parseResponsesRequest([]byte(ok)); err != nil {
		t.Errorf("%s: %v", ok, err)
	}
}
