package proxy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/chatmsg"
)

// FuzzParseResponsesRequest checks parseResponsesRequest against an exact
// reading of the body: every text of the input, the instructions and the
// tools that the model reads is in what the guard judges.
func FuzzParseResponsesRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","input":"hi"}`,
		`{"instructions":"be nice","input":[{"role":"user","content":[{"type":"input_text","text":"a"},{"type":"input_image","image_url":"u"}]},{"type":"reasoning","summary":[{"type":"summary_text","text":"R"}]},{"type":"function_call","call_id":"c","name":"f","arguments":"{\"x\":\"\\u0045\"}"},{"type":"function_call_output","call_id":"c","output":"OUT"}]}`,
		`{"input":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"output_text","text":"b"},{"type":"refusal","refusal":"no"}]},{"role":"developer","content":"d"},{"role":"user","content":"c"}],"tools":[{"type":"function","name":"f","description":"D\u0045"}]}`,
		`{"input":"x","previous_response_id":"r"}`,
		`{"input":[{"role":"user","content":"a","Content":"b"}]}`,
		`{"input":"a","text":{"format":{"type":"json_schema","name":"n","schema":{"description":"S"}}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := parseResponsesRequest(body)
		if err != nil {
			return
		}
		v, err := exactDecode(body)
		if err != nil {
			t.Fatalf("accepted, but an exact reading fails: %v", err)
		}
		top := v.(map[string]any)
		for _, k := range []string{"conversation", "prompt"} {
			if x, ok := top[k]; ok && x != nil {
				t.Fatalf("accepted %s=%v", k, x)
			}
		}
		if prev, _ := top["previous_response_id"].(string); prev != r.Previous {
			t.Fatalf("previous_response_id %q read as %q", prev, r.Previous)
		}
		if r.Previous != "" {
			// Judged once the conversation it continues is read
			// (TestResponsesContinued): the request's own turns with it.
			if err := r.readTurns(nil); err != nil {
				return
			}
		}
		var judged strings.Builder
		for _, m := range r.Messages {
			judged.WriteString(m.Content + "\n" + m.ReasoningContent + "\n")
		}
		judged.WriteString(r.Trailing + "\n" + strings.Join(r.Declared, "\n"))
		has := func(s string) bool {
			q, _ := chatmsg.ToJSON(mustJSON(s))
			return strings.Contains(judged.String(), s) || strings.Contains(judged.String(), q[1:len(q)-1])
		}
		var readable []string
		var all func(v any, key string)
		all = func(v any, key string) {
			switch v := v.(type) {
			case string:
				if key == "arguments" {
					v = chatmsg.Unescape(v) // what vLLM's and Ollama's models read
				}
				if key != "type" && key != "id" && key != "call_id" && key != "role" && key != "status" && strings.TrimSpace(v) != "" {
					readable = append(readable, v)
				}
			case []any:
				for _, e := range v {
					all(e, key)
				}
			case map[string]any:
				t, _ := v["type"].(string)
				switch t {
				case "input_image", "input_file", "input_audio":
					return // media: skipped and noted
				case "text", "input_text", "output_text", "refusal", "thinking":
					// A known text part: its text fields are what is read.
					for _, k := range []string{"text", "refusal", "thinking"} {
						all(v[k], k)
					}
					return
				}
				for k, e := range v {
					all(e, k)
				}
			}
		}
		all(top["instructions"], "")
		all(top["tools"], "")
		// An item's fields that the model reads (an unknown one it does
		// not: the upstream ignores it or refuses the request).
		items, _ := top["input"].([]any)
		if s, ok := top["input"].(string); ok {
			all(s, "")
		}
		for _, it := range items {
			it, _ := it.(map[string]any)
			for _, k := range []string{"content", "output", "arguments", "name"} {
				all(it[k], k)
			}
			// A summary's parts are read by their text (a key beside it
			// no upstream reads).
			parts, _ := it["summary"].([]any)
			for _, p := range parts {
				p, _ := p.(map[string]any)
				all(p["text"], "text")
			}
		}
		for _, want := range readable {
			if !has(want) {
				t.Fatalf("the model reads %q, the guard judges %q", want, judged.String())
			}
		}
		if last := r.Messages[len(r.Messages)-1]; last.Role != "user" || strings.TrimSpace(last.Content) == "" {
			t.Fatalf("the judged turn is %q", last)
		}
	})
}

// FuzzResponsesStream feeds a Responses stream (events' data separated by
// blank lines) to the parser and checks, for every event it accepts up to
// the first it refuses, that each text in it a client can read (as it
// came, or as the parser rewrote it) — deltas, done texts, parts, items,
// the completed response's output — was judged: it is in the text fed to
// the guard so far.
func FuzzResponsesStream(f *testing.F) {
	for _, s := range []respSpec{
		{Content: []string{"Hello", " world"}},
		{Summary: []string{"Think"}, Content: []string{"A"}, Call: "f", ArgDeltas: []string{`{"a":`, `"\u0045"}`}},
	} {
		var data [][]byte
		for _, e := range s.events() {
			_, d, _ := bytes.Cut(e, []byte("data: "))
			data = append(data, bytes.TrimSpace(d))
		}
		f.Add(bytes.Join(data, []byte("\n\n")))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
		var judged strings.Builder
		for _, d := range bytes.Split(stream, []byte("\n\n")) {
			p := s.parse(sseEvent{raw: d, data: d})
			if p.bad != nil || p.apiErr != nil {
				return
			}
			tf := &p.text
			for _, x := range []*string{tf.ReasoningContent, tf.Content, tf.Refusal} {
				if x != nil {
					judged.WriteString(*x)
				}
			}
			for _, c := range tf.tools {
				judged.WriteString(c.name + c.args)
			}
			// What the client reads: the event as it came, or rewritten.
			read := d
			if p.raw != nil {
				_, after, _ := bytes.Cut(p.raw, []byte("\ndata: "))
				read = bytes.TrimSpace(after)
			}
			v, err := exactDecode(read)
			if err != nil {
				if len(bytes.TrimSpace(d)) == 0 || string(bytes.TrimSpace(d)) == "[DONE]" {
					continue
				}
				t.Fatalf("accepted, but an exact reading fails: %v", err)
			}
			ev, _ := v.(map[string]any)
			var texts []string
			var walk func(v any, key string)
			walk = func(v any, key string) {
				switch v := v.(type) {
				case string:
					switch key {
					case "delta", "text", "refusal", "arguments", "name":
						texts = append(texts, v)
					}
				case []any:
					for _, e := range v {
						walk(e, key)
					}
				case map[string]any:
					for k, e := range v {
						if k != "annotations" {
							walk(e, k)
						}
					}
				}
			}
			for _, k := range []string{"delta", "text", "refusal", "arguments", "name", "item", "part"} {
				walk(ev[k], k)
			}
			if r, ok := ev["response"].(map[string]any); ok {
				walk(r["output"], "")
			}
			for _, x := range texts {
				if !strings.Contains(judged.String(), x) {
					t.Fatalf("event %s: a client reads %q, the guard judged %q", d, x, judged.String())
				}
			}
			if p.finished {
				return
			}
		}
	})
}
