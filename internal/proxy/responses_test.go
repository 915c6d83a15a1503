package proxy

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// ---- a Responses API upstream and client ----

// respSpec is an answer as an OpenAI Responses stream lays it out.
type respSpec struct {
	Summary []string // reasoning summary deltas (a reasoning item)
	Content []string // output_text deltas (a message item)
	// Call, when set, is a function call after the message, its
	// arguments in ArgDeltas.
	Call      string
	ArgDeltas []string
	Hang      bool // no response.completed: the upstream waits
}

// events renders the stream, numbered from 0, every event named.
func (s respSpec) events() [][]byte {
	var out [][]byte
	seq := 0
	ev := func(typ string, m map[string]any) {
		m["type"], m["sequence_number"] = typ, seq
		seq++
		out = append(out, namedEvent(typ, m))
	}
	resp := func(status string, output []any) map[string]any {
		return map[string]any{"id": "resp_fake42", "object": "response", "created_at": 1700000000, "status": status,
			"model": "fake-llm", "output": output, "usage": nil, "instructions": nil, "tools": []any{}}
	}
	ev("response.created", map[string]any{"response": resp("in_progress", []any{})})
	ev("response.in_progress", map[string]any{"response": resp("in_progress", []any{})})
	var items []any
	if s.Summary != nil {
		i := len(items)
		at := map[string]any{"item_id": "rs_1", "output_index": i, "summary_index": 0}
		ev("response.output_item.added", map[string]any{"output_index": i, "item": map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{}}})
		ev("response.reasoning_summary_part.added", withMembers(at, "part", map[string]any{"type": "summary_text", "text": ""}))
		for _, d := range s.Summary {
			ev("response.reasoning_summary_text.delta", withMembers(at, "delta", d, "obfuscation", "pad"))
		}
		text := strings.Join(s.Summary, "")
		part := map[string]any{"type": "summary_text", "text": text}
		ev("response.reasoning_summary_text.done", withMembers(at, "text", text))
		ev("response.reasoning_summary_part.done", withMembers(at, "part", part))
		item := map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{part}}
		ev("response.output_item.done", map[string]any{"output_index": i, "item": item})
		items = append(items, item)
	}
	if s.Content != nil {
		i := len(items)
		at := map[string]any{"item_id": "msg_1", "output_index": i, "content_index": 0}
		ev("response.output_item.added", map[string]any{"output_index": i, "item": map[string]any{
			"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}})
		ev("response.content_part.added", withMembers(at, "part", map[string]any{"type": "output_text", "text": "", "annotations": []any{}}))
		for _, d := range s.Content {
			ev("response.output_text.delta", withMembers(at, "delta", d, "logprobs", []any{}, "obfuscation", "pad"))
		}
		if s.Hang && s.Call == "" {
			return out
		}
		text := strings.Join(s.Content, "")
		part := map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
		ev("response.output_text.done", withMembers(at, "text", text, "logprobs", []any{}))
		ev("response.content_part.done", withMembers(at, "part", part))
		item := map[string]any{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
		ev("response.output_item.done", map[string]any{"output_index": i, "item": item})
		items = append(items, item)
	}
	if s.Call != "" {
		i := len(items)
		at := map[string]any{"item_id": "fc_1", "output_index": i}
		ev("response.output_item.added", map[string]any{"output_index": i, "item": map[string]any{
			"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_1", "name": s.Call, "arguments": ""}})
		for _, d := range s.ArgDeltas {
			ev("response.function_call_arguments.delta", withMembers(at, "delta", d))
		}
		if s.Hang {
			return out
		}
		args := strings.Join(s.ArgDeltas, "")
		ev("response.function_call_arguments.done", withMembers(at, "arguments", args))
		item := map[string]any{"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": s.Call, "arguments": args}
		ev("response.output_item.done", map[string]any{"output_index": i, "item": item})
		items = append(items, item)
	}
	if s.Hang {
		return out
	}
	ev("response.completed", map[string]any{"response": resp("completed", items)})
	return out
}

// whole is the non-streamed response.
func (s respSpec) whole() []byte {
	var output []any
	if s.Summary != nil {
		output = append(output, map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{map[string]any{"type": "summary_text", "text": strings.Join(s.Summary, "")}}})
	}
	if s.Content != nil {
		output = append(output, map[string]any{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": strings.Join(s.Content, ""), "annotations": []any{}}}})
	}
	if s.Call != "" {
		output = append(output, map[string]any{"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": s.Call, "arguments": strings.Join(s.ArgDeltas, "")})
	}
	return mustJSON(map[string]any{"id": "resp_fake42", "object": "response", "created_at": 1700000000, "status": "completed",
		"model": "fake-llm", "output": output, "usage": map[string]int{"input_tokens": 9, "output_tokens": 50, "total_tokens": 59}})
}

func newResponsesUpstream(t testing.TB, s respSpec, write int) *fakeUpstream {
	return newFakeUpstream(t, upstreamSpec{Events: s.events(), Whole: s.whole(), Write: write, Hang: s.Hang})
}

func newResponsesProxy(t testing.TB, up string, m *guard.Model, tenant Tenant) *testProxy {
	return newTestProxyFor(t, NewResponsesHandler, up, Direct(m), tenant, nil)
}

// respEvent is an event as a client reads it.
type respEvent struct {
	Name string
	Data map[string]any
}

// readResponses reads a Responses stream as the SDKs do: events by their
// data's type; text is the output_text deltas, summary the reasoning
// summary's, last the final event.
type readResponses struct {
	Events        []respEvent
	Text, Summary string
	Args          string
	Last          respEvent
}

func readResponsesStream(t testing.TB, body []byte) readResponses {
	t.Helper()
	var out readResponses
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 1<<24)
	var name string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			var d map[string]any
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &d); err != nil {
				t.Fatalf("event data %q: %v", line, err)
			}
			e := respEvent{Name: name, Data: d}
			if name != "" && d["type"] != name {
				t.Errorf("event %q with data of type %v", name, d["type"])
			}
			out.Events = append(out.Events, e)
			out.Last = e
			delta, _ := d["delta"].(string)
			switch d["type"] {
			case "response.output_text.delta":
				out.Text += delta
			case "response.reasoning_summary_text.delta":
				out.Summary += delta
			case "response.function_call_arguments.delta":
				out.Args += delta
			}
			name = ""
		}
	}
	return out
}

func postResponses(t testing.TB, url string, body any) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post(url+"/v1/responses", "application/json", bytes.NewReader(mustJSON(body)))
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

func respRequest(prompt string, stream bool) map[string]any {
	return map[string]any{"model": "fake-llm", "stream": stream, "input": prompt}
}

// outputText is a response object's output_text parts, joined.
func outputText(t testing.TB, resp any) string {
	t.Helper()
	r, _ := resp.(map[string]any)
	items, _ := r["output"].([]any)
	var b strings.Builder
	for _, it := range items {
		m, _ := it.(map[string]any)
		parts, _ := m["content"].([]any)
		for _, p := range parts {
			pm, _ := p.(map[string]any)
			if pm["type"] == "output_text" {
				b.WriteString(pm["text"].(string))
			}
		}
	}
	return b.String()
}

// ---- tests ----

// TestResponsesSafeStreamIsByteIdentical: a Responses answer the guard does
// not flag — reasoning summary, message, function call — reaches the
// client exactly as the upstream wrote it, in both modes and every
// chunking.
func TestResponsesSafeStreamIsByteIdentical(t *testing.T) {
	m := tinyModel(t)
	pol := safePolicy(m)
	for _, mode := range []Mode{HoldBack, PassThrough} {
		for _, ch := range chunkings {
			t.Run(mode.String()+"/"+ch.name, func(t *testing.T) {
				spec := respSpec{Summary: splitRunes("Thinking about it.", ch.delta), Content: splitRunes(testResponse, ch.delta),
					Call: "get_weather", ArgDeltas: splitRunes(`{"city": "Z\u00fcrich"}`, ch.delta)}
				up := newResponsesUpstream(t, spec, ch.write)
				p := newResponsesProxy(t, up.URL, m, Tenant{Name: "t1", Policy: pol, Mode: mode})
				resp, body := postResponses(t, p.URL, respRequest("Hello there.", true))
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				if want := up.streamBody(); !bytes.Equal(body, want) {
					t.Fatalf("body differs from the upstream's:\n got %q\nwant %q", body, want)
				}
				if rec := p.lastRecord(t); rec["event"] != EventAllowed || rec["tokens"] == float64(0) {
					t.Errorf("audit record %v", rec)
				}
				got := readResponsesStream(t, body)
				if got.Text != testResponse || got.Last.Data["type"] != "response.completed" {
					t.Errorf("client read %q, last event %v", got.Text, got.Last.Data["type"])
				}
			})
		}
	}
}

// TestResponsesFlaggedStreamIsCut: an answer the guard flags is cut at the
// token the guard API flags when fed directly: hold-back shows exactly the
// text before the flagged run, pass-through at least the flagged token;
// the stream ends with response.incomplete (reason content_filter) whose
// output is what the client was shown, numbered after the last event; the
// upstream is cancelled.
func TestResponsesFlaggedStreamIsCut(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	before := textBefore(fc.Tokens, fc.RunStart)
	through := textBefore(fc.Tokens, fc.Index+1)
	for _, mode := range []Mode{HoldBack, PassThrough} {
		for _, ch := range chunkings {
			t.Run(mode.String()+"/"+ch.name, func(t *testing.T) {
				up := newResponsesUpstream(t, respSpec{Content: splitRunes(testResponse, ch.delta), Hang: true}, ch.write)
				p := newResponsesProxy(t, up.URL, m, Tenant{Name: "t1", Policy: fc.Policy, Mode: mode})
				resp, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
				if resp.StatusCode != 200 {
					t.Fatalf("status %d: %s", resp.StatusCode, body)
				}
				got := readResponsesStream(t, body)
				switch mode {
				case HoldBack:
					if got.Text != before {
						t.Errorf("hold-back showed %q\nwant the text before the flagged run %q", got.Text, before)
					}
				case PassThrough:
					if !strings.HasPrefix(testResponse, got.Text) || !strings.HasPrefix(got.Text, through) {
						t.Errorf("pass-through showed %q\nwant a prefix of the response holding %q", got.Text, through)
					}
				}
				last := got.Last.Data
				r, _ := last["response"].(map[string]any)
				if last["type"] != "response.incomplete" || r["status"] != "incomplete" || r["id"] != "resp_fake42" {
					t.Fatalf("last event %v", last)
				}
				if d, _ := r["incomplete_details"].(map[string]any); d["reason"] != "content_filter" {
					t.Errorf("incomplete_details %v", r["incomplete_details"])
				}
				if sg, _ := r["streamguard"].(map[string]any); sg["reason"] != EventResponseFlagged || sg["token"] != float64(fc.Index) {
					t.Errorf("streamguard %v", r["streamguard"])
				}
				if out := outputText(t, r); out != got.Text {
					t.Errorf("the final response's output text %q is not what the stream showed %q", out, got.Text)
				}
				for i, e := range got.Events {
					if e.Data["sequence_number"] != float64(i) {
						t.Fatalf("event %d (%v) numbered %v", i, e.Data["type"], e.Data["sequence_number"])
					}
				}
				if rec := p.lastRecord(t); rec["event"] != EventResponseFlagged || rec["token"] != float64(fc.Index) {
					t.Errorf("audit record %v", rec)
				}
				up.waitCanceled(t)
			})
		}
	}
}

// TestResponsesFlaggedCallWithheld: in hold-back a function call whose
// arguments flag goes out not at all: no piece of it before the cut.
func TestResponsesFlaggedCallWithheld(t *testing.T) {
	m := tinyModel(t)
	args := `{"query": "` + testResponse + `"}`
	// The call is judged as the template writes it after the content.
	call := "<tool_call>\n{\"name\": \"search\", \"arguments\": " + args + "}\n</tool_call>"
	fc := findFlagCase(t, m, withAnswer(call), 0.5)
	up := newResponsesUpstream(t, respSpec{Call: "search", ArgDeltas: splitRunes(args, 5), Hang: true}, 0)
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy})
	resp, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	got := readResponsesStream(t, body)
	if got.Args != "" || got.Last.Data["type"] != "response.incomplete" {
		t.Fatalf("client got arguments %q, last event %v", got.Args, got.Last.Data["type"])
	}
	for _, e := range got.Events {
		if e.Data["type"] == "response.output_item.added" {
			t.Errorf("the flagged call's item went out: %v", e.Data)
		}
	}
	if r, _ := got.Last.Data["response"].(map[string]any); len(r["output"].([]any)) != 0 {
		t.Errorf("final output %v", r["output"])
	}
}

// TestResponsesCopiesMustAgree: every copy of the answer's text (done
// events, the completed response) must say what the deltas said. A copy
// that says otherwise is rewritten to what was judged (the client never
// reads other text); one that agrees passes as it came; an event the
// guard cannot read refuses the stream with upstream_bad_response, and no
// text is released.
func TestResponsesCopiesMustAgree(t *testing.T) {
	m := tinyModel(t)
	pol := safePolicy(m)
	base := respSpec{Content: []string{"Hello", " world."}}.events()
	edit := func(i int, f func(map[string]any)) [][]byte {
		out := append([][]byte(nil), base...)
		sc := bufio.NewScanner(bytes.NewReader(base[i]))
		var name string
		var d map[string]any
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "event: ") {
				name = strings.TrimPrefix(l, "event: ")
			} else if strings.HasPrefix(l, "data: ") {
				_ = json.Unmarshal([]byte(l[6:]), &d)
			}
		}
		f(d)
		if typ, _ := d["type"].(string); typ != "" {
			name = typ
		}
		out[i] = namedEvent(name, d)
		return out
	}
	find := func(typ string) int {
		for i, e := range base {
			if bytes.HasPrefix(e, []byte("event: "+typ+"\n")) {
				return i
			}
		}
		t.Fatalf("no %s", typ)
		return -1
	}
	completed := find("response.completed")
	setText := func(text string) func(map[string]any) {
		return func(d map[string]any) {
			r := d["response"].(map[string]any)
			it := r["output"].([]any)[0].(map[string]any)
			it["content"] = []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}}
		}
	}
	const rewritten = "rewritten"
	for _, tc := range []struct {
		name   string
		events [][]byte
		bad    string // "" when the stream must pass as it came, rewritten when a copy is rewritten
	}{
		{"done text differs", edit(find("response.output_text.done"), func(d map[string]any) { d["text"] = "Hello there." }), rewritten},
		{"part done differs", edit(find("response.content_part.done"), func(d map[string]any) {
			d["part"] = map[string]any{"type": "output_text", "text": "Hi", "annotations": []any{}}
		}), rewritten},
		{"completed text differs", edit(completed, setText("Goodbye world.")), rewritten},
		{"completed drops an item", edit(completed, func(d map[string]any) { d["response"].(map[string]any)["output"] = []any{} }), rewritten},
		{"completed adds a web search", edit(completed, func(d map[string]any) {
			r := d["response"].(map[string]any)
			r["output"] = append(r["output"].([]any), map[string]any{"type": "web_search_call", "id": "ws_1", "status": "completed"})
		}), `type "web_search_call"`},
		{"output_text differs", edit(completed, func(d map[string]any) { d["response"].(map[string]any)["output_text"] = "Other." }), rewritten},
		{"completed with other ids", edit(completed, func(d map[string]any) {
			d["response"].(map[string]any)["output"].([]any)[0].(map[string]any)["id"] = "msg_rebuilt"
		}), ""},
		{"output_text agrees", edit(completed, func(d map[string]any) { d["response"].(map[string]any)["output_text"] = "Hello world." }), ""},
		{"logprobs", edit(find("response.output_text.delta"), func(d map[string]any) {
			d["logprobs"] = []any{map[string]any{"token": "Hello", "logprob": -0.1}}
		}), "log probabilities"},
		{"misnamed event", func() [][]byte {
			out := append([][]byte(nil), base...)
			i := find("response.output_text.delta")
			out[i] = bytes.Replace(out[i], []byte("event: response.output_text.delta"), []byte("event: response.in_progress"), 1)
			return out
		}(), "named"},
		{"unknown event", edit(find("response.output_text.delta"), func(d map[string]any) { d["type"] = "response.audio.delta" }), "does not judge"},
		{"unknown field with text", edit(find("response.output_text.delta"), func(d map[string]any) { d["transcript"] = "unjudged" }), "transcript"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t, upstreamSpec{Events: tc.events})
			p := newResponsesProxy(t, up.URL, m, Tenant{Policy: pol})
			_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
			got := readResponsesStream(t, body)
			if tc.bad == "" {
				if !bytes.Equal(body, up.streamBody()) {
					t.Fatalf("body differs from the upstream's: %s", body)
				}
				return
			}
			if tc.bad == rewritten {
				// Every text the client reads is the judged "Hello world.".
				for _, e := range got.Events {
					for _, k := range []string{"text"} {
						if v, ok := e.Data[k]; ok && v != "Hello world." {
							t.Errorf("%v: %s %q", e.Data["type"], k, v)
						}
					}
					if part, ok := e.Data["part"].(map[string]any); ok && e.Data["type"] == "response.content_part.done" && part["text"] != "Hello world." {
						t.Errorf("part done %v", part)
					}
				}
				r, _ := got.Last.Data["response"].(map[string]any)
				if got.Last.Data["type"] != "response.completed" || outputText(t, r) != "Hello world." || r["output_text"] != nil {
					t.Errorf("last event %v", got.Last.Data)
				}
				if bytes.Equal(body, up.streamBody()) {
					t.Errorf("the differing copy went out as it came")
				}
				return
			}
			last := got.Last.Data
			e, _ := last["error"].(map[string]any)
			if last["type"] != "error" || e["code"] != "upstream_bad_response" || !strings.Contains(last["message"].(string), tc.bad) {
				t.Fatalf("last event %v, want an upstream_bad_response error with %q", last, tc.bad)
			}
			if got.Text != "" {
				t.Errorf("text released before the refusal: %q", got.Text)
			}
		})
	}
}

// TestResponsesCompletedAddsText: text that the completed response adds
// at the end of the item being written (a server that streams part of it)
// is judged like a delta: a flag in it cuts the stream.
func TestResponsesCompletedAddsText(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	// Deltas carry the first 3 bytes; done events and completed the whole.
	spec := respSpec{Content: []string{testResponse}}
	evs := spec.events()
	for i, e := range evs {
		if bytes.Contains(e, []byte("response.output_text.delta")) {
			evs[i] = bytes.Replace(e, mustJSON(testResponse), mustJSON(testResponse[:3]), 1)
		}
	}
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy})
	_, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
	got := readResponsesStream(t, body)
	if got.Last.Data["type"] != "response.incomplete" {
		t.Fatalf("last event %v: the text the done event added was not judged", got.Last.Data)
	}
	if r := got.Last.Data["response"]; outputText(t, r) != testResponse[:3] {
		t.Errorf("final output %q, want what was sent %q", outputText(t, r), testResponse[:3])
	}
}

// TestResponsesWhole: a whole answer is returned as it is when safe; when
// flagged, refused with an error, or (refusal "completion") returned cut
// before the flagged run with status incomplete.
func TestResponsesWhole(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	spec := respSpec{Summary: []string{"Let me see."}, Content: []string{testResponse}}
	up := newResponsesUpstream(t, respSpec{Content: []string{testResponse}}, 0)
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
	resp, body := postResponses(t, p.URL, respRequest(fc.Prompt, false))
	if resp.StatusCode != 200 || !bytes.Equal(body, respSpec{Content: []string{testResponse}}.whole()) {
		t.Fatalf("safe whole answer: %d %s", resp.StatusCode, body)
	}

	up = newResponsesUpstream(t, spec, 0)
	p = newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy})
	resp, body = postResponses(t, p.URL, respRequest(fc.Prompt, false))
	var e struct {
		Error apiError `json:"error"`
	}
	if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Error.Code != "content_filter" {
		t.Fatalf("flagged whole answer: %d %s", resp.StatusCode, body)
	}

	// The reasoning item comes first: the flagged run is in the message,
	// so the cut keeps the reasoning whole and the message up to the run.
	fcr := findFlagCase(t, m, func(p string) []guard.Message {
		return []guard.Message{{Role: "user", Content: p}, {Role: "assistant", ReasoningContent: "Let me see.", Content: testResponse}}
	}, 0.6)
	p = newResponsesProxy(t, up.URL, m, Tenant{Policy: fcr.Policy, Refusal: RefusalCompletion})
	resp, body = postResponses(t, p.URL, respRequest(fcr.Prompt, false))
	var r map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &r) != nil {
		t.Fatalf("flagged whole answer, refusal completion: %d %s", resp.StatusCode, body)
	}
	// Token 0..: the think block's tokens come first; the cut is in the
	// content when the run starts after them.
	want := textBefore(fcr.Tokens, fcr.RunStart)
	if i := strings.Index(want, "</think>\n\n"); i >= 0 {
		want = want[i+len("</think>\n\n"):]
	}
	d, _ := r["incomplete_details"].(map[string]any)
	if r["status"] != "incomplete" || d["reason"] != "content_filter" || r["id"] != "resp_fake42" {
		t.Errorf("response %v", r)
	}
	if got := outputText(t, r); got != want {
		t.Errorf("cut output %q, want %q", got, want)
	}
	if out := r["output"].([]any); len(out) != 2 || out[0].(map[string]any)["type"] != "reasoning" {
		t.Errorf("output %v: want the reasoning item and the cut message", out)
	}
}

// TestResponsesRequest reads Responses requests into what the guard
// judges: instructions as the system turn, the last user turn, what comes
// after it (calls and their results) as trailing text, declared function
// tools and a JSON schema.
func TestResponsesRequest(t *testing.T) {
	body := mustJSON(map[string]any{
		"model": "m", "instructions": "Be brief.", "stream": true,
		"input": []any{
			map[string]any{"role": "user", "content": "Hi"},
			map[string]any{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "Hello!"}}},
			map[string]any{"role": "user", "content": []any{map[string]any{"type": "input_text", "text": "Weather?"}, map[string]any{"type": "input_image", "image_url": "https://x/y.png"}}},
			map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{map[string]any{"type": "summary_text", "text": "Call the tool."}}},
			map[string]any{"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": `{"city":"Paris"}`},
			map[string]any{"type": "function_call_output", "call_id": "c1", "output": "Sunny, 20C"},
		},
		"tools": []any{map[string]any{"type": "function", "name": "get_weather", "description": "Weather now", "parameters": map[string]any{"type": "object"}}},
		"text":  map[string]any{"format": map[string]any{"type": "json_schema", "name": "w", "schema": map[string]any{"type": "object"}}},
	})
	req, err := parseResponsesRequest(body)
	if err != nil {
		t.Fatal(err)
	}
	want := []guard.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Hi"}, {Role: "assistant", Content: "Hello!"}, {Role: "user", Content: "Weather?"}}
	if !equalMessages(req.Messages, want) {
		t.Errorf("messages %+v\nwant %+v", req.Messages, want)
	}
	for _, s := range []string{"Call the tool.", `<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call>`, "\nSunny, 20C"} {
		s = strings.ReplaceAll(s, `\n`, "\n")
		if !strings.Contains(req.Trailing, s) {
			t.Errorf("trailing %q lacks %q", req.Trailing, s)
		}
	}
	if len(req.Declared) != 2 || !strings.Contains(req.Declared[0], `"description": "Weather now"`) || !strings.Contains(req.Declared[1], `"name": "w"`) {
		t.Errorf("declared %q", req.Declared)
	}
	if !req.Stream || strings.Join(req.Skipped, ",") != "input_image" {
		t.Errorf("stream %v skipped %v", req.Stream, req.Skipped)
	}

	for _, tc := range []struct {
		body map[string]any
		err  string
	}{
		{map[string]any{"input": "x", "conversation": "conv_1"}, "conversation"},
		{map[string]any{"input": "x", "prompt": map[string]any{"id": "pmpt_1"}}, "prompt"},
		{map[string]any{"input": "x", "background": true}, "background"},
		{map[string]any{"input": "x", "request_id": "resp_1"}, "request_id"},
		{map[string]any{"input": "x", "previous_response": map[string]any{"id": "resp_1"}}, "previous_response"},
		{map[string]any{"input": "x", "top_logprobs": 3}, "top_logprobs"},
		{map[string]any{"input": "x", "include": []any{"message.output_text.logprobs"}}, "include"},
		{map[string]any{"input": "x", "tools": []any{map[string]any{"type": "web_search"}}}, `type "web_search"`},
		{map[string]any{"input": []any{map[string]any{"type": "item_reference", "id": "msg_1"}}}, "item_reference"},
		{map[string]any{"input": []any{map[string]any{"type": "computer_call_output", "call_id": "c"}}}, "computer_call_output"},
		{map[string]any{"input": []any{map[string]any{"role": "assistant", "content": "Hi"}}}, "input: no user message"},
		{map[string]any{}, "input: a prompt is required"},
		{map[string]any{"input": "x", "Input": "y"}, "case"},
	} {
		if _, err := parseResponsesRequest(mustJSON(tc.body)); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%v: error %v, want one with %q", tc.body, err, tc.err)
		}
	}
}

func equalMessages(a, b []guard.Message) bool { return reflect.DeepEqual(a, b) }

// TestResponsesPromptRefused: a flagged prompt is answered without calling
// the upstream: an error naming param "input", or (refusal "completion")
// an incomplete response carrying the refusal message, whole or streamed
// as OpenAI streams one.
func TestResponsesPromptRefused(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	flagAll := guard.Policy{Mode: guard.Strict, Thresholds: allThresholds(m, 0)}
	up := newResponsesUpstream(t, respSpec{Content: []string{"x"}}, 0)
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: flagAll})
	resp, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
	var e struct {
		Error apiError `json:"error"`
	}
	if resp.StatusCode != 400 || json.Unmarshal(body, &e) != nil || e.Error.Code != "content_filter" || e.Error.Param == nil || *e.Error.Param != "input" {
		t.Fatalf("flagged prompt: %d %s", resp.StatusCode, body)
	}
	p = newResponsesProxy(t, up.URL, m, Tenant{Policy: flagAll, Refusal: RefusalCompletion, RefusalMessage: "No."})
	_, body = postResponses(t, p.URL, respRequest(fc.Prompt, true))
	got := readResponsesStream(t, body)
	if got.Text != "No." || got.Last.Data["type"] != "response.incomplete" || outputText(t, got.Last.Data["response"]) != "No." {
		t.Errorf("streamed refusal: %s", body)
	}
	for i, ev := range got.Events {
		if ev.Data["sequence_number"] != float64(i) {
			t.Errorf("event %d numbered %v", i, ev.Data["sequence_number"])
		}
	}
	_, body = postResponses(t, p.URL, respRequest(fc.Prompt, false))
	var r map[string]any
	if json.Unmarshal(body, &r) != nil || r["status"] != "incomplete" || outputText(t, r) != "No." {
		t.Errorf("whole refusal: %s", body)
	}
	if up.calls != 0 {
		t.Errorf("the upstream was called %d times", up.calls)
	}
	_ = context.Background
}

// promptRecorder records the prompts the guard judges.
type promptRecorder struct {
	Moderator
	mu      sync.Mutex
	prompts [][]guard.Message
}

func (m *promptRecorder) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := m.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return &promptRecordingStream{s, m}, nil
}

type promptRecordingStream struct {
	Stream
	m *promptRecorder
}

func (s *promptRecordingStream) JudgePrompt(ctx context.Context, msgs []guard.Message) (*guard.PromptVerdict, error) {
	s.m.mu.Lock()
	s.m.prompts = append(s.m.prompts, append([]guard.Message(nil), msgs...))
	s.m.mu.Unlock()
	return s.Stream.JudgePrompt(ctx, msgs)
}

func (m *promptRecorder) last() []guard.Message {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.prompts[len(m.prompts)-1]
}

// TestResponsesContinued: a request that continues an answer the proxy
// relayed judged and whole (previous_response_id) is judged in the
// conversation that answer ended — its turns, its answer — as the
// upstream's model reads it; the request goes upstream unchanged. An
// answer the guard cut, one another tenant got, or one the proxy never
// relayed cannot be continued: 400, the upstream not called.
func TestResponsesContinued(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	rec := &promptRecorder{Moderator: Direct(m)}
	spec := respSpec{Content: []string{"Bread needs ", "flour."}}
	for _, stream := range []bool{true, false} {
		up := newResponsesUpstream(t, spec, 0)
		p := newTestProxyFor(t, NewResponsesHandler, up.URL, rec, Tenant{Name: "t1", Policy: safePolicy(m)}, nil)
		first := respRequest("What does bread need?", stream)
		first["instructions"] = "Be brief."
		if resp, body := postResponses(t, p.URL, first); resp.StatusCode != 200 {
			t.Fatalf("first turn: %d %s", resp.StatusCode, body)
		}
		p.wait(t, 1)
		next := respRequest("And then?", stream)
		next["previous_response_id"] = "resp_fake42"
		resp, body := postResponses(t, p.URL, next)
		if resp.StatusCode != 200 {
			t.Fatalf("stream %v: continuing: %d %s", stream, resp.StatusCode, body)
		}
		// The earlier instructions are context too: vLLM's model reads them.
		want := []guard.Message{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "What does bread need?"}, {Role: "assistant", Content: "Bread needs flour."}, {Role: "user", Content: "And then?"}}
		if got := rec.last(); !equalMessages(got, want) {
			t.Errorf("stream %v: judged %+v\nwant %+v", stream, got, want)
		}
		if got := up.lastBody(); !bytes.Equal(got, mustJSON(next)) {
			t.Errorf("the upstream got %s", got)
		}
	}

	// A cut answer is not remembered; nor is another tenant's.
	up := newResponsesUpstream(t, respSpec{Content: splitRunes(testResponse, 7)}, 0)
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, rec, Tenant{Name: "t1", Policy: fc.Policy}, nil)
	if _, body := postResponses(t, p.URL, respRequest(fc.Prompt, true)); !bytes.Contains(body, []byte("response.incomplete")) {
		t.Fatalf("the answer was not cut: %s", body)
	}
	p.wait(t, 1)
	calls := up.calls
	next := respRequest("Go on.", true)
	next["previous_response_id"] = "resp_fake42"
	resp, body := postResponses(t, p.URL, next)
	if resp.StatusCode != 400 || !bytes.Contains(body, []byte("previous_response_id")) || up.calls != calls {
		t.Errorf("continuing a cut answer: %d %s (upstream calls %d → %d)", resp.StatusCode, body, calls, up.calls)
	}
}

// TestConversationsBound: the conversations remembered stay within their
// bytes, the least recently used forgotten first; a tenant reads only its
// own.
func TestConversationsBound(t *testing.T) {
	// Each entry costs its key and conversationOverhead beside its turns.
	over := int64(len(conversationKey("a", "r1"))) + conversationOverhead
	c := newConversations(100 + 2*over)
	turn := func(n int) []json.RawMessage { return []json.RawMessage{json.RawMessage(strings.Repeat("x", n))} }
	c.put("a", "r1", turn(40))
	c.put("a", "r2", turn(40))
	if _, ok := c.get("a", "r1"); !ok { // r1 now the most recent
		t.Fatal("r1 forgotten")
	}
	c.put("a", "r3", turn(40)) // three entries past the bound: r2, the least recent, goes
	if _, ok := c.get("a", "r2"); ok {
		t.Error("r2 kept past the bound")
	}
	for _, id := range []string{"r1", "r3"} {
		if _, ok := c.get("a", id); !ok {
			t.Errorf("%s forgotten", id)
		}
	}
	if _, ok := c.get("b", "r1"); ok {
		t.Error("tenant b read tenant a's conversation")
	}
	c.put("a", "big", turn(int(c.maxBytes)))
	if _, ok := c.get("a", "big"); ok || c.bytes > c.maxBytes {
		t.Errorf("a conversation larger than the bound kept (%d bytes held)", c.bytes)
	}
	// An id given to a second answer, or forgotten, is not continued.
	c = newConversations(1 << 20)
	c.put("a", "r1", turn(10))
	c.put("a", "r1", turn(10))
	c.put("a", "r2", turn(10))
	c.forget("a", "r2")
	for _, id := range []string{"r1", "r2"} {
		if _, ok := c.get("a", id); ok {
			t.Errorf("%s can be continued", id)
		}
	}
}
