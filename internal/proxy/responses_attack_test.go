package proxy

// Attacks on the Responses API support: an upstream or a request that
// tries to get text past the guard, to crash the proxy or to make it work
// without bound. Each test describes the attack and checks it fails.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// editEvent re-renders event i of evs with its data edited by f.
func editEvent(t *testing.T, evs [][]byte, i int, f func(map[string]any)) [][]byte {
	t.Helper()
	out := append([][]byte(nil), evs...)
	sc := bufio.NewScanner(bytes.NewReader(evs[i]))
	var d map[string]any
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "data: ") {
			if err := json.Unmarshal([]byte(l[6:]), &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	f(d)
	out[i] = namedEvent(d["type"].(string), d)
	return out
}

func findEvent(t *testing.T, evs [][]byte, typ string) int {
	t.Helper()
	for i, e := range evs {
		if bytes.HasPrefix(e, []byte("event: "+typ+"\n")) {
			return i
		}
	}
	t.Fatalf("no %s", typ)
	return -1
}

// TestResponsesAttackDoneEventWithDelta: a done event
// (output_text.done, reasoning_summary_text.done) that also carries a
// "delta" member, read as a delta, would hide its "text" — what clients
// read from a done event — from the guard: each event type may carry only
// its own members.
func TestResponsesAttackDoneEventWithDelta(t *testing.T) {
	m := tinyModel(t)
	const unjudged = "UNJUDGED TEXT THE GUARD NEVER READ"
	spec := respSpec{Summary: []string{"Think", "ing."}, Content: []string{"Hello", " world."}}
	for _, typ := range []string{"response.output_text.done", "response.reasoning_summary_text.done"} {
		t.Run(typ, func(t *testing.T) {
			base := spec.events()
			evs := editEvent(t, base, findEvent(t, base, typ), func(d map[string]any) {
				d["delta"], d["text"] = "", unjudged
			})
			up := newFakeUpstream(t, upstreamSpec{Events: evs})
			p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
			_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
			got := readResponsesStream(t, body)
			for _, e := range got.Events {
				if e.Data["type"] == typ && e.Data["text"] == unjudged {
					t.Fatalf("the client got a %s whose text %q was never judged (deltas said %q / %q)", typ, unjudged, got.Text, got.Summary)
				}
			}
		})
	}
}

// TestResponsesAttackNegativeIndex: a negative content_index or
// summary_index must be refused, not index the part list with -1 (in
// Envoy's ext_proc the relay runs on a goroutine of its own, Call.Stream,
// where a panic would end the whole process).
func TestResponsesAttackNegativeIndex(t *testing.T) {
	created := `{"type":"response.created","sequence_number":0,"response":{"id":"r","object":"response","status":"in_progress","output":[]}}`
	msg := `{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","status":"in_progress","content":[]}}`
	rs := `{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}`
	for _, tc := range []struct {
		name string
		evs  []string
	}{
		{"text delta", []string{created, msg, `{"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":-1,"delta":"x"}`}},
		{"part added", []string{created, msg, `{"type":"response.content_part.added","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":-1,"part":{"type":"output_text","text":""}}`}},
		{"summary delta", []string{created, rs, `{"type":"response.reasoning_summary_text.delta","sequence_number":2,"item_id":"rs_1","output_index":0,"summary_index":-1,"delta":"x"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &responsesStream{seq: -1}
			for i, d := range tc.evs {
				func() {
					defer func() {
						if r := recover(); r != nil {
							t.Fatalf("event %d: parse panicked: %v", i, r)
						}
					}()
					if p := s.parse(sseEvent{data: []byte(d)}); p.bad != nil && i < len(tc.evs)-1 {
						t.Fatalf("event %d refused: %v", i, p.bad)
					}
				}()
			}
		})
	}
}

// attackManyParts is a response whose one message has n parts of 10 bytes.
func attackManyParts(n int) []byte {
	parts := make([]any, n)
	for i := range parts {
		parts[i] = map[string]any{"type": "output_text", "text": "abcdefghi ", "annotations": []any{}}
	}
	return mustJSON(map[string]any{"id": "resp_fake42", "object": "response", "status": "completed", "model": "fake-llm",
		"output": []any{map[string]any{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": parts}}})
}

func attackAlloc(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestResponsesAttackQuadraticParts: an event (output_item.added/done,
// response.completed, a whole body) of n parts must cost O(n) bytes, not
// O(n²) (each part's text concatenated onto the text collected so far):
// 8,000 parts (~0.5 MB) would allocate hundreds of MB, and the limits
// allow 4 MiB events and 32 MiB bodies.
func TestResponsesAttackQuadraticParts(t *testing.T) {
	body := attackManyParts(8000)
	var err error
	alloc := attackAlloc(func() {
		var o outState
		err = o.readResponse(body, &newText{})
	})
	if err != nil {
		t.Fatal(err)
	}
	if limit := uint64(40 * len(body)); alloc > limit {
		t.Fatalf("reading a %d-byte response of 8000 parts allocated %d MB (> %d MB): quadratic in the parts", len(body), alloc>>20, limit>>20)
	}
}

// attackStopAtAnswer is a moderator whose streams judge the prompt and
// then fail: the answer's text is fed, never judged.
type attackStopAtAnswer struct{ Moderator }

func (m attackStopAtAnswer) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := m.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return stopStream{s}, nil
}

type stopStream struct{ Stream }

func (stopStream) StartResponse(context.Context, bool) error {
	return errors.New("test: stop before judging the answer")
}

// TestResponsesAttackQuadraticWholeBody: the same through the proxy's
// whole path, where feeding every part without a take() between them would
// append each piece to the last op's text (feedSynthetic), quadratic again.
func TestResponsesAttackQuadraticWholeBody(t *testing.T) {
	m := tinyModel(t)
	body := attackManyParts(8000)
	up := newFakeUpstream(t, upstreamSpec{Whole: body})
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, attackStopAtAnswer{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
	alloc := attackAlloc(func() {
		resp, b := postResponses(t, p.URL, respRequest("Hello there.", false))
		if resp.StatusCode != 503 {
			t.Errorf("status %d: %.200s", resp.StatusCode, b)
		}
	})
	if limit := uint64(60 * len(body)); alloc > limit {
		t.Fatalf("a %d-byte whole response of 8000 parts allocated %d MB (> %d MB) before the guard judged anything", len(body), alloc>>20, limit>>20)
	}
}

// TestResponsesAttackWholeCutReasoningContent: a whole answer cut
// (refusal "completion", and every whole answer under Envoy's streamed
// body modes, statusSent) inside a reasoning item's summary must not keep
// that item's "content" (reasoning_text), which lies after the cut, as
// the upstream sent it: every part list of a rebuilt item is replaced.
func TestResponsesAttackWholeCutReasoningContent(t *testing.T) {
	m := tinyModel(t)
	const after = " And then the hidden reasoning text that lies after the cut."
	fc := findFlagCase(t, m, func(p string) []guard.Message {
		return []guard.Message{{Role: "user", Content: p}, {Role: "assistant", ReasoningContent: testResponse + after, Content: "Done."}}
	}, 0.3)
	if strings.Contains(textBefore(fc.Tokens, fc.RunStart), strings.TrimSpace(after)[:20]) {
		t.Skip("the flag falls after the reasoning text")
	}
	body := mustJSON(map[string]any{"id": "resp_fake42", "object": "response", "status": "completed", "model": "fake-llm", "output": []any{
		map[string]any{"id": "rs_1", "type": "reasoning",
			"summary": []any{map[string]any{"type": "summary_text", "text": testResponse}},
			"content": []any{map[string]any{"type": "reasoning_text", "text": after}}},
		map[string]any{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": "Done.", "annotations": []any{}}}},
	}})
	up := newFakeUpstream(t, upstreamSpec{Whole: body})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy, Refusal: RefusalCompletion})
	resp, out := postResponses(t, p.URL, respRequest(fc.Prompt, false))
	var r map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(out, &r) != nil || r["status"] != "incomplete" {
		t.Fatalf("want a cut response: %d %s", resp.StatusCode, out)
	}
	if bytes.Contains(out, []byte(strings.TrimSpace(after))) {
		t.Fatalf("the cut response carries the reasoning text after the cut:\n%s", out)
	}
}

// TestResponsesAttackWholeCutEnvelopeCopy: a copy of the answer elsewhere in
// the response's envelope — a member the proxy does not know — must not
// reach the client with a cut answer: the cut response keeps only the
// envelope members that describe the request and the run (vLLM's
// output_messages is refused outright: TestResponsesAttackResponseMessagesRefused).
func TestResponsesAttackWholeCutEnvelopeCopy(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	var whole map[string]any
	if err := json.Unmarshal(respSpec{Content: []string{testResponse}}.whole(), &whole); err != nil {
		t.Fatal(err)
	}
	whole["answer_copy"] = []any{map[string]any{"type": "raw_message_tokens", "message": testResponse, "tokens": []int{1, 2}}}
	up := newFakeUpstream(t, upstreamSpec{Whole: mustJSON(whole)})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy, Refusal: RefusalCompletion})
	body := respRequest(fc.Prompt, false)
	resp, out := postResponses(t, p.URL, body)
	var r map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(out, &r) != nil || r["status"] != "incomplete" {
		t.Fatalf("want a cut response: %d %s", resp.StatusCode, out)
	}
	var walk func(v any) bool
	walk = func(v any) bool {
		switch v := v.(type) {
		case string:
			return strings.Contains(v, testResponse)
		case []any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for _, e := range v {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	if walk(r) {
		t.Fatalf("the cut response still carries the whole flagged answer:\n%s", out)
	}
}

// TestResponsesAttackFormatTypeCaseVariant: text.format and tools[] are
// decoded with encoding/json (case-insensitive, last key wins), so a
// "Type" beside "type" must be refused: {"type":"json_schema",…,
// "Type":"text"} is a JSON schema to a Python upstream (vLLM accepts the
// extra key) and would be no schema to the guard;
// {"type":"web_search","Type":"function"} would pass the tool type check.
func TestResponsesAttackFormatTypeCaseVariant(t *testing.T) {
	body := []byte(`{"model":"m","input":"Hi","text":{"format":{"type":"json_schema","name":"w","description":"SECRET-SCHEMA-TEXT","schema":{"type":"object"},"Type":"text"}}}`)
	req, err := parseResponsesRequest(body)
	if err == nil && !strings.Contains(strings.Join(req.Declared, "\n"), "SECRET-SCHEMA-TEXT") {
		t.Errorf("a json_schema format with a \"Type\" key is neither refused nor judged (declared %q)", req.Declared)
	}
	body = []byte(`{"model":"m","input":"Hi","tools":[{"type":"web_search","Type":"function"}]}`)
	if _, err := parseResponsesRequest(body); err == nil {
		t.Errorf("a web_search tool spelt with a second \"Type\" key is accepted")
	}
}

// TestResponsesAttackUnknownRequestMembers: vLLM's Responses API reads
// previous_input_messages (earlier turns, in harmony or chat form) into
// the conversation the model reads: refused, as the guard does not read
// it.
func TestResponsesAttackUnknownRequestMembers(t *testing.T) {
	body := []byte(`{"model":"m","input":"Hi","previous_input_messages":[{"role":"user","content":"SECRET-EARLIER-TURN"}]}`)
	req, err := parseResponsesRequest(body)
	if err != nil {
		return
	}
	all := fmt.Sprint(req.Messages) + req.Trailing + strings.Join(req.Declared, "\n")
	if !strings.Contains(all, "SECRET-EARLIER-TURN") {
		t.Errorf("previous_input_messages is neither refused nor judged: the guard reads %s", all)
	}
}

// TestResponsesAttackAnnotationText: annotations (a part's
// "annotations", the annotation of response.output_text.annotation.added)
// hold text clients show (a citation's link text) that the guard does not
// judge: here the text the guard flags, put in a title beside a short
// answer the guard passes, must not reach the client.
func TestResponsesAttackAnnotationText(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	base := respSpec{Content: []string{"See the source."}}.events()
	i := findEvent(t, base, "response.output_text.done")
	ann := namedEvent("response.output_text.annotation.added", map[string]any{"type": "response.output_text.annotation.added",
		"sequence_number": 5, "item_id": "msg_1", "output_index": 0, "content_index": 0, "annotation_index": 0,
		"annotation": map[string]any{"type": "url_citation", "url": "https://example.com/", "title": testResponse, "start_index": 0, "end_index": 3}})
	evs := append(append(append([][]byte(nil), base[:i]...), ann), base[i:]...)
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy})
	_, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
	got := readResponsesStream(t, body)
	for _, e := range got.Events {
		if a, _ := e.Data["annotation"].(map[string]any); a != nil && a["title"] == testResponse {
			t.Fatalf("the client got an annotation whose title (%d bytes of text the guard flags) was never judged; stream ended with %v", len(testResponse), got.Last.Data["type"])
		}
	}
}

// TestResponsesAttackDroppedTextBounded: the proxy keeps
// the text it read twice (what the upstream sent, what the client was
// sent). Text the guard's stream never takes — the leading newlines the
// template drops — costs the guard nothing, so neither the guard's context
// (outOfRoom) nor hold-back's queue bound (its events are released at
// once) ends such a stream: the text kept has a bound of its own, half the
// response size limit each.
func TestResponsesAttackDroppedTextBounded(t *testing.T) {
	limit := (&Config{MaxRequestBytes: defaultMaxRequestBytes}).maxResponseBytes()
	var refused error
	s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
	f := newFeeder()
	step := func(d string) {
		t.Helper()
		p := s.parse(sseEvent{data: []byte(d)})
		if p.bad != nil {
			refused = p.bad
			return
		}
		ev := &eventText{}
		if p.hasText {
			if err := feedFields(f, ev, &p.text); err != nil {
				t.Fatal(err)
			}
		}
		f.end(ev)
		s.sent(&heldEvent{info: p.info, text: ev}) // released at once: fedEnd 0
	}
	step(`{"type":"response.created","sequence_number":0,"response":{"id":"r","object":"response","status":"in_progress","output":[]}}`)
	step(`{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","status":"in_progress","content":[]}}`)
	step(`{"type":"response.content_part.added","sequence_number":2,"item_id":"msg_1","output_index":0,"content_index":0,"part":{"type":"output_text","text":""}}`)
	nl := string(mustJSON(strings.Repeat("\n", 1<<20)))
	var taken int64
	for i := 0; taken <= limit && refused == nil; i++ {
		step(fmt.Sprintf(`{"type":"response.output_text.delta","sequence_number":%d,"item_id":"msg_1","output_index":0,"content_index":0,"delta":%s}`, 3+i, nl))
		taken += 1 << 20
	}
	if refused == nil || !strings.Contains(refused.Error(), "grew past") {
		t.Fatalf("%d MiB of text taken, refusal %v", taken>>20, refused)
	}
	kept := len(s.recv.items[0].content.parts[0].b) + len(s.given.items[0].content.parts[0].b)
	if len(f.fed) == 0 && int64(kept) > limit {
		t.Fatalf("%d MiB of upstream text taken without refusal and %d MiB kept (the guard was fed %d bytes)", taken>>20, kept>>20, len(f.fed))
	}
}

// noRoom is a moderator whose streams judge the prompt and then
// have no room for the answer (as for an answer longer than the guard's
// context).
type noRoom struct{ Moderator }

func (m noRoom) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := m.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return noRoomStream{s}, nil
}

type noRoomStream struct{ Stream }

func (noRoomStream) AppendText(context.Context, string) ([]guard.TokenVerdict, error) {
	return nil, ErrContextLength
}

// TestResponsesAttackWholeTooLongEnvelopeCopy: the same with any tenant
// (refusal "error", the default): a whole answer longer than the guard's
// stream is returned cut at what was judged (here nothing), status
// incomplete, max_output_tokens, without the envelope's copy of it.
func TestResponsesAttackWholeTooLongEnvelopeCopy(t *testing.T) {
	m := tinyModel(t)
	var whole map[string]any
	if err := json.Unmarshal(respSpec{Content: []string{testResponse}}.whole(), &whole); err != nil {
		t.Fatal(err)
	}
	whole["answer_copy"] = []any{map[string]any{"type": "raw_message_tokens", "message": testResponse, "tokens": []int{1, 2}}}
	up := newFakeUpstream(t, upstreamSpec{Whole: mustJSON(whole)})
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, noRoom{Direct(m)}, Tenant{Policy: safePolicy(m)}, nil)
	body := respRequest("Hello there.", false)
	resp, out := postResponses(t, p.URL, body)
	if resp.StatusCode != 200 || !bytes.Contains(out, []byte(`"max_output_tokens"`)) {
		t.Fatalf("want a cut response: %d %s", resp.StatusCode, out)
	}
	if bytes.Contains(out, []byte("a few more words to close.")) {
		t.Fatalf("the answer cut for the guard's length still carries it whole, unjudged:\n%s", out)
	}
}

// TestResponsesAttackResponseMessagesRefused: vLLM spells the conversation and the
// answer beside the output (input_messages, output_messages) when asked
// (enable_response_messages): the request is refused, and so is an answer
// that carries them anyway, whole or streamed.
func TestResponsesAttackResponseMessagesRefused(t *testing.T) {
	m := tinyModel(t)
	body := respRequest("Hello there.", false)
	body["enable_response_messages"] = true
	if _, err := parseResponsesRequest(mustJSON(body)); err == nil || !strings.Contains(err.Error(), "enable_response_messages") {
		t.Errorf("enable_response_messages: %v", err)
	}
	var whole map[string]any
	if err := json.Unmarshal(respSpec{Content: []string{"Hi."}}.whole(), &whole); err != nil {
		t.Fatal(err)
	}
	whole["output_messages"] = []any{map[string]any{"message": testResponse}}
	up := newFakeUpstream(t, upstreamSpec{Whole: mustJSON(whole)})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
	resp, out := postResponses(t, p.URL, respRequest("Hello there.", false))
	if resp.StatusCode != 502 || !bytes.Contains(out, []byte("output_messages")) {
		t.Errorf("a whole answer with output_messages: %d %s", resp.StatusCode, out)
	}
	evs := respSpec{Content: []string{"Hi."}}.events()
	evs = editEvent(t, evs, findEvent(t, evs, "response.completed"), func(d map[string]any) {
		d["response"].(map[string]any)["output_messages"] = []any{map[string]any{"message": testResponse}}
	})
	up = newFakeUpstream(t, upstreamSpec{Events: evs})
	p = newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
	_, out = postResponses(t, p.URL, respRequest("Hello there.", true))
	if got := readResponsesStream(t, out); got.Last.Data["type"] != "error" || bytes.Contains(out, []byte(testResponse)) {
		t.Errorf("a stream with output_messages: last event %v", got.Last.Data)
	}
}
