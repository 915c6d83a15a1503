package proxy

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/chatmsg"
)

// exactDecode decodes JSON into maps, whose keys are exact (no case
// folding): what a parser that matches keys exactly reads.
func exactDecode(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	err := d.Decode(&v)
	return v, err
}

// FuzzParseRequest checks parseRequest against a reading with exact keys:
// a request it accepts says the same to a parser that matches keys
// exactly (the upstream's), so the guard judges what the model receives.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		`{"messages":[{"role":"system","content":"s"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url"}]},{"role":"assistant","content":null,"reasoning_content":"EARLIER"},{"role":"tool","content":"x"},{"role":"user","content":"b"}]}`,
		`{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"c","reasoning_content":"KEPT"},{"role":"tool","content":"<x>\"y\"</x>"}],"tools":[{"type":"function","function":{"description":"q\"<&>\u0045"}}]}`,
		`{"messages":[{"role":"user","content":"hi","Content":"x"}]}`,
		`{"n":1,"messages":[{"role":"developer","content":"d"},{"role":"user","content":"u"}],"tools":[{"type":"function","function":{"parameters":{"Content":{}}}}]}`,
		`{"messages":[{"role":"user","content":"a"}],"messages":[]}`,
		`{"logprobs":true,"modalities":["text","audio"],"messages":[{"role":"user","content":"a"}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := parseRequest(body)
		if err != nil {
			return
		}
		v, err := exactDecode(body)
		if err != nil {
			t.Fatalf("accepted, but an exact reading fails: %v", err)
		}
		top := v.(map[string]any)
		if n, ok := top["n"]; ok && n != nil && n.(json.Number).String() != "1" {
			t.Fatalf("accepted n=%v", n)
		}
		if s, _ := top["stream"].(bool); s != r.Stream {
			t.Fatalf("stream %v, exact reading %v", r.Stream, s)
		}
		// Nothing is asked for that the guard would not judge.
		if lp := top["logprobs"]; !fuzzFalsy(lp) {
			t.Fatalf("accepted logprobs=%v", lp)
		}
		if mods, ok := top["modalities"].([]any); ok {
			for _, m := range mods {
				if s, _ := m.(string); !strings.EqualFold(s, "text") {
					t.Fatalf("accepted modalities %v", mods)
				}
			}
		}
		// Everything the model reads, in an exact reading of the body, is
		// in what the guard judges: the turns up to the last user turn
		// (the system turn holding the tool definitions) or the text
		// judged after them.
		var judged strings.Builder
		for _, m := range r.Messages {
			judged.WriteString(m.Content + "\n") // a prompt's rendering writes no reasoning
		}
		judged.WriteString(r.Trailing + "\n" + strings.Join(r.Declared, "\n"))
		has := func(s string) bool {
			// Inside a tool definition's JSON, as the template's tojson
			// writes it (chatmsg.ToJSON).
			q, _ := chatmsg.ToJSON(mustJSON(s))
			return strings.Contains(judged.String(), s) || strings.Contains(judged.String(), q[1:len(q)-1])
		}
		for _, want := range fuzzReadable(top) {
			if !has(want) {
				t.Fatalf("the model reads %q, the guard judges %q", want, judged.String())
			}
		}
		if last := r.Messages[len(r.Messages)-1]; last.Role != "user" || strings.TrimSpace(last.Content) == "" {
			t.Fatalf("the judged turn is %q", last)
		}
	})
}

// fuzzReadable lists the strings of a request (read with exact keys) that
// a chat template lays out for the model: message text, content parts of
// any type but media (whose text fields only), reasoning, tool calls and
// results, tool definitions.
func fuzzReadable(top map[string]any) []string {
	var out []string
	var all func(v any, key string)
	all = func(v any, key string) {
		switch v := v.(type) {
		case string:
			if key != "type" && key != "id" && strings.TrimSpace(v) != "" {
				out = append(out, v)
			}
		case []any:
			for _, e := range v {
				all(e, key)
			}
		case map[string]any:
			for k, e := range v {
				all(e, k)
			}
		}
	}
	media := map[string]bool{"image_url": true, "input_image": true, "image": true, "input_audio": true, "audio_url": true, "audio": true, "video_url": true, "video": true, "file": true, "input_file": true}
	named := map[string]bool{"text": true, "input_text": true, "output_text": true, "refusal": true, "thinking": true}
	all(top["tools"], "")
	all(top["functions"], "")
	msgs, _ := top["messages"].([]any)
	// The template keeps reasoning only for the assistant turns after the
	// last query: the last user message that is not a tool response.
	lastQuery := -1
	for i, m := range msgs {
		m, _ := m.(map[string]any)
		c, isText := m["content"].(string)
		if m["role"] == "user" && !(isText && strings.HasPrefix(c, "<tool_response>") && strings.HasSuffix(c, "</tool_response>")) {
			lastQuery = i
		}
	}
	for i, m := range msgs {
		m, _ := m.(map[string]any)
		if i > lastQuery {
			for _, k := range []string{"reasoning_content", "reasoning"} {
				all(m[k], k)
			}
		}
		calls, _ := m["tool_calls"].([]any)
		if fc, ok := m["function_call"]; ok && fc != nil {
			calls = append(calls, fc)
		}
		for _, c := range calls {
			c, _ := c.(map[string]any)
			if fn, ok := c["function"].(map[string]any); ok {
				c = fn
			}
			if name, ok := c["name"].(string); ok {
				// A call the template writes: its name and arguments.
				all(name, "name")
				all(c["arguments"], "arguments")
				continue
			}
			all(c, "")
		}
		switch c := m["content"].(type) {
		case string:
			all(c, "content")
		case []any:
			for _, p := range c {
				switch p := p.(type) {
				case string:
					all(p, "content")
				case map[string]any:
					typ, _ := p["type"].(string)
					if media[typ] || named[typ] {
						for _, k := range []string{"text", "refusal", "thinking"} {
							if media[typ] && k == "thinking" {
								continue
							}
							all(p[k], k)
						}
						continue
					}
					all(p, "")
				}
			}
		}
	}
	return out
}

// fuzzTextless reports whether a JSON value (as exactDecode reads it)
// carries no text: null, a boolean, a number, "", [] or {}.
func fuzzTextless(v any) bool {
	switch v := v.(type) {
	case string:
		return v == ""
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return true
}

// fuzzAllTextless reports whether every value of an object carries no text.
func fuzzAllTextless(o map[string]any) bool {
	for _, v := range o {
		if !fuzzTextless(v) {
			return false
		}
	}
	return true
}

// fuzzFalsy is Python's truth of a JSON value, negated (what truthy says
// of it, read independently).
func fuzzFalsy(v any) bool {
	switch v := v.(type) {
	case bool:
		return !v
	case json.Number:
		f, err := v.Float64()
		return err == nil && f == 0
	}
	return v == nil || fuzzTextless(v)
}

// FuzzParseEvent checks parseEvent against a reading with exact keys: an
// event it accepts has at most one choice, numbered 0, and the text it
// judges is the text a client that matches keys exactly shows.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{
		`{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}`,
		`{"choices":[{"index":0,"delta":{"reasoning_content":"think","refusal":"no"},"finish_reason":"stop"}]}`,
		`{"choices":[{"index":0,"delta":{"content":"a","Content":"b"}}]}`,
		`{"choices":[{"index":0,"delta":{"content":"a","content":"b"}}]}`,
		`{"choices":[{"index":1,"delta":{"content":"b"}}]}`,
		`{"error":{"message":"x"}}`,
		`[DONE]`,
		`{"choices":[]}` + "\r" + `data: {}`,
		`{"choices":[{"index":0,"text":"Hi","logprobs":null,"seed":null,"stop_reason":"\n","delta":{"token_id":1,"content":"Hi","tool_calls":[]}}]}`,
		`{"choices":[{"index":0,"delta":{"audio":{"transcript":"x"}},"logprobs":{"content":[{"token":"x"}]}}]}`,
		`{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}},{"index":1,"type":"custom","custom":{"name":"sh","input":"ls"}}]}}]}`,
		`{"choices":[{"index":0,"delta":{"function_call":{"name":"f","arguments":{"a":"b"}}}}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := parseEvent(sseEvent{raw: data, data: data})
		if p.bad != nil || !p.isChunk || p.apiErr != nil {
			return
		}
		v, err := exactDecode(data)
		if err != nil {
			t.Fatalf("accepted, but an exact reading fails: %v", err)
		}
		top := v.(map[string]any)
		choices, _ := top["choices"].([]any)
		if len(choices) > 1 || len(choices) == 1 != p.hasText {
			t.Fatalf("%d choices accepted (hasText %v)", len(choices), p.hasText)
		}
		if len(choices) == 0 {
			return
		}
		ch := choices[0].(map[string]any)
		if i, ok := ch["index"]; ok && i != nil && i.(json.Number).String() != "0" {
			if n, err := i.(json.Number).Float64(); err != nil || n != 0 {
				t.Fatalf("choice %v accepted", i)
			}
		}
		delta, _ := ch["delta"].(map[string]any)
		for key, got := range map[string]*string{"content": p.text.Content, "refusal": p.text.Refusal, "reasoning_content": p.text.ReasoningContent, "reasoning": p.text.Reasoning} {
			want, ok := delta[key].(string)
			if !ok {
				if got != nil && *got != "" {
					t.Fatalf("%s: judged %q, exact reading has none", key, *got)
				}
				continue
			}
			if got == nil || *got != want {
				t.Fatalf("%s: judged %v, exact reading %q", key, got, want)
			}
		}
		if p.text.ReasoningContent != nil && p.text.Reasoning != nil && *p.text.ReasoningContent != *p.text.Reasoning {
			t.Fatalf("differing reasoning fields accepted")
		}
		// Tool calls: each entry's name and arguments (or a custom tool's
		// input) are judged as the exact reading has them; its other
		// fields carry no text.
		calls, _ := delta["tool_calls"].([]any)
		if fc, ok := delta["function_call"].(map[string]any); ok {
			calls = append(calls, map[string]any{"function": fc})
		}
		if len(calls) != len(p.text.tools) {
			t.Fatalf("%d tool calls judged, exact reading has %d", len(p.text.tools), len(calls))
		}
		for i, c := range calls {
			c, _ := c.(map[string]any)
			for k, v := range c {
				if !slices.Contains([]string{"index", "id", "type", "function", "custom"}, k) && !fuzzTextless(v) {
					t.Fatalf("tool call field %q accepted with %v", k, v)
				}
			}
			for _, part := range []struct{ key, text string }{{"function", "arguments"}, {"custom", "input"}} {
				fn, ok := c[part.key].(map[string]any)
				if !ok {
					continue
				}
				for k, v := range fn {
					if k != "name" && k != part.text && !fuzzTextless(v) {
						t.Fatalf("tool call %s field %q accepted with %v", part.key, k, v)
					}
				}
				if name, ok := fn["name"].(string); ok && name != p.text.tools[i].name {
					t.Fatalf("tool call name %q judged as %q", name, p.text.tools[i].name)
				}
				if args, ok := fn[part.text].(string); ok && args != p.text.tools[i].args {
					t.Fatalf("tool call %s %q judged as %q", part.text, args, p.text.tools[i].args)
				}
			}
		}
		// Every other field of the choice and its delta carries no text,
		// or is one named as carrying none of the answer's.
		if text, ok := ch["text"].(string); ok && text != "" && (p.text.Content == nil || *p.text.Content != text) {
			t.Fatalf("legacy text %q accepted beside content %v", text, p.text.Content)
		}
		for _, o := range []struct {
			fields map[string]any
			known  []string
		}{
			{ch, []string{"index", "delta", "text", "finish_reason", "stop_reason", "matched_stop", "native_finish_reason", "content_filter_results"}},
			{delta, []string{"content", "reasoning_content", "reasoning", "refusal", "role", "tool_calls", "function_call", "annotations"}},
		} {
			for k, v := range o.fields {
				if slices.Contains(o.known, k) || fuzzTextless(v) {
					continue
				}
				if lp, ok := v.(map[string]any); ok && k == "logprobs" && fuzzAllTextless(lp) {
					continue
				}
				t.Fatalf("field %q accepted with %v", k, v)
			}
		}
	})
}
