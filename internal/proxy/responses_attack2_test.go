package proxy

// More attacks on the Responses API support, on the copies of the text,
// the items events name, and what the proxy keeps and writes: each test
// states the attack and checks it fails.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// ---- helpers ----

// refused reports whether the proxy refused the stream (its last event an
// upstream_bad_response error): the attack fails there. Any other end
// than the final response fails the test.
func refused(t *testing.T, got readResponses) bool {
	t.Helper()
	last := got.Last.Data
	if e, _ := last["error"].(map[string]any); last["type"] == "error" && e["code"] == "upstream_bad_response" {
		return true
	}
	if last["type"] != "response.completed" {
		t.Fatalf("the stream ended with %v", last)
	}
	return false
}

// relayRecorded relays evs through a Responses proxy (the default mode)
// whose moderator records what it feeds the guard, and returns the
// client's events and that text.
func relayRecorded(t *testing.T, m *guard.Model, evs [][]byte) (readResponses, string) {
	t.Helper()
	rec := &attack2Recorder{Moderator: Direct(m)}
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, rec, Tenant{Policy: safePolicy(m)}, nil)
	_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
	return readResponsesStream(t, body), rec.text()
}

// relayHoldBack relays stream through a hold-back Responses proxy and
// returns the bytes the upstream sent, the client's body and its events:
// what the amplification attacks compare.
func relayHoldBack(t *testing.T, m *guard.Model, stream [][]byte) (in int, body []byte, got readResponses) {
	t.Helper()
	for _, e := range stream {
		in += len(e)
	}
	up := newFakeUpstream(t, upstreamSpec{Events: stream})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m), Mode: HoldBack})
	_, body = postResponses(t, p.URL, respRequest("Hello there.", true))
	return in, body, readResponsesStream(t, body)
}

// attack2Stream renders events as the upstream writes them, numbered.
func attack2Stream(evs ...map[string]any) [][]byte {
	var out [][]byte
	for i, m := range evs {
		m["sequence_number"] = i
		out = append(out, namedEvent(m["type"].(string), m))
	}
	return out
}

func attack2Ev(typ string, kv ...any) map[string]any {
	m := map[string]any{"type": typ}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

func attack2Resp(status string, output []any, extra ...any) map[string]any {
	r := map[string]any{"id": "resp_fake42", "object": "response", "created_at": 1700000000, "status": status,
		"model": "fake-llm", "output": output, "usage": nil, "tools": []any{}}
	for i := 0; i+1 < len(extra); i += 2 {
		r[extra[i].(string)] = extra[i+1]
	}
	return r
}

func attack2Msg(id, status string, parts ...any) map[string]any {
	if parts == nil {
		parts = []any{}
	}
	return map[string]any{"id": id, "type": "message", "status": status, "role": "assistant", "content": parts}
}

func attack2Text(s string) map[string]any {
	return map[string]any{"type": "output_text", "text": s, "annotations": []any{}}
}

func attack2Refusal(s string) map[string]any { return map[string]any{"type": "refusal", "refusal": s} }

// attack2Recorder is a moderator that records the answer text the guard is fed
// (what it judges, in order).
type attack2Recorder struct {
	Moderator
	mu  sync.Mutex
	fed strings.Builder
}

func (r *attack2Recorder) Open(ctx context.Context, p guard.Policy) (Stream, error) {
	s, err := r.Moderator.Open(ctx, p)
	if err != nil {
		return nil, err
	}
	return &attack2RecStream{Stream: s, r: r}, nil
}

func (r *attack2Recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fed.String()
}

type attack2RecStream struct {
	Stream
	r *attack2Recorder
}

func (s *attack2RecStream) AppendText(ctx context.Context, text string) ([]guard.TokenVerdict, error) {
	s.r.mu.Lock()
	s.r.fed.WriteString(text)
	s.r.mu.Unlock()
	return s.Stream.AppendText(ctx, text)
}

func (s *attack2RecStream) StartToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	s.r.mu.Lock()
	s.r.fed.WriteString(tokenizer.ToolCallTag)
	s.r.mu.Unlock()
	return s.Stream.StartToolCall(ctx)
}

func (s *attack2RecStream) EndToolCall(ctx context.Context) ([]guard.TokenVerdict, error) {
	s.r.mu.Lock()
	s.r.fed.WriteString(tokenizer.ToolCallEndTag)
	s.r.mu.Unlock()
	return s.Stream.EndToolCall(ctx)
}

// sdkClient says how a client assembles a stream's messages: items
// appended at output_item.added and found by the index they were added at
// (filed: openai-python's ResponseStreamState,
// lib/streaming/responses/_responses.py, _get_output_item) or by their
// position (openai-node's ResponseStream, and openai-python before it);
// parts appended at content_part.added; text deltas appended to the part
// at content_index. With copies, the done events and the final response
// replace what they copy, as openai-node's accumulateResponse
// (src/lib/responses/ResponseAccumulator.ts) does.
type sdkClient struct{ filed, copies bool }

// snapshots returns the client's output_text (the messages' output_text
// parts joined) after each event, or an error where the client would
// raise.
func (c sdkClient) snapshots(evs []respEvent) ([]string, error) {
	var output []map[string]any
	filed := map[int]map[string]any{}
	var texts []string
	for _, e := range evs {
		d := e.Data
		idx := func(k string) int { f, _ := d[k].(float64); return int(f) }
		item := func() (map[string]any, error) {
			if c.filed {
				it, ok := filed[idx("output_index")]
				if !ok {
					return nil, fmt.Errorf("RuntimeError: an event for output index %d before its output item", idx("output_index"))
				}
				return it, nil
			}
			if idx("output_index") >= len(output) {
				return nil, fmt.Errorf("IndexError: output_index %d", idx("output_index"))
			}
			return output[idx("output_index")], nil
		}
		part := func(it map[string]any) (map[string]any, error) {
			parts, _ := it["content"].([]any)
			if idx("content_index") >= len(parts) {
				return nil, fmt.Errorf("IndexError: content_index %d", idx("content_index"))
			}
			p, _ := parts[idx("content_index")].(map[string]any)
			return p, nil
		}
		typ, _ := d["type"].(string)
		switch typ {
		case "response.output_item.added":
			it, _ := d["item"].(map[string]any)
			output = append(output, it)
			filed[idx("output_index")] = it
		case "response.content_part.added", "response.output_text.delta",
			"response.content_part.done", "response.output_text.done", "response.output_item.done":
			copied := typ != "response.content_part.added" && typ != "response.output_text.delta"
			if copied && !c.copies {
				break
			}
			it, err := item()
			if err != nil {
				return nil, err
			}
			if typ == "response.output_item.done" {
				output[idx("output_index")], _ = d["item"].(map[string]any)
				break
			}
			if it["type"] != "message" {
				break
			}
			if typ == "response.content_part.added" {
				parts, _ := it["content"].([]any)
				it["content"] = append(parts, d["part"])
				break
			}
			p, err := part(it)
			if err != nil {
				return nil, err
			}
			switch typ {
			case "response.content_part.done":
				it["content"].([]any)[idx("content_index")] = d["part"]
			case "response.output_text.done":
				p["text"] = d["text"]
			default:
				if c.filed && p["type"] != "output_text" {
					return nil, fmt.Errorf("AssertionError: part type %v", p["type"])
				}
				s, _ := p["text"].(string)
				p["text"] = s + d["delta"].(string)
			}
		case "response.completed", "response.incomplete":
			if !c.copies {
				break
			}
			r, _ := d["response"].(map[string]any)
			out, _ := r["output"].([]any)
			output = nil
			for _, it := range out {
				m, _ := it.(map[string]any)
				output = append(output, m)
			}
		}
		var b strings.Builder
		for _, it := range output {
			if it["type"] != "message" {
				continue
			}
			parts, _ := it["content"].([]any)
			for _, p := range parts {
				pm, _ := p.(map[string]any)
				if pm["type"] == "output_text" {
					s, _ := pm["text"].(string)
					b.WriteString(s)
				}
			}
		}
		texts = append(texts, b.String())
	}
	return texts, nil
}

// ---- 1. a text done event for a part of another type ----

// TestResponsesAttackTextDoneWrongPartTypeLeaks: response.output_text.done
// naming a refusal part (or response.refusal.done naming an output_text
// part) is no copy of it: rewritten to the part's member, it would leave
// the event's own (the one every client reads:
// ResponseTextDoneEvent.text, ResponseRefusalDoneEvent.refusal) as the
// upstream wrote it. Such an event is refused.
func TestResponsesAttackTextDoneWrongPartTypeLeaks(t *testing.T) {
	m := tinyModel(t)
	const unjudged = "UNJUDGED TEXT THE GUARD NEVER READ"
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	for _, tc := range []struct {
		name   string
		part   map[string]any // the part as added, empty
		delta  string         // its delta event type
		done   map[string]any // the done event, carrying unjudged text in the member its type carries
		member string
	}{
		{"output_text.done on a refusal part", attack2Refusal(""), "response.refusal.delta",
			attack2Ev("response.output_text.done", append(at, "text", unjudged, "logprobs", []any{})...), "text"},
		{"refusal.done on an output_text part", attack2Text(""), "response.output_text.delta",
			attack2Ev("response.refusal.done", append(at, "refusal", unjudged)...), "refusal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			judged := "I can't help with that."
			final := map[string]any{"type": "refusal", "refusal": judged}
			if tc.part["type"] == "output_text" {
				final = attack2Text(judged)
			}
			evs := attack2Stream(
				attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
				attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
				attack2Ev("response.content_part.added", append(at, "part", tc.part)...),
				attack2Ev(tc.delta, append(at, "delta", judged)...),
				tc.done,
				attack2Ev("response.content_part.done", append(at, "part", final)...),
				attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed", final)),
				attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", final)})),
			)
			got, fed := relayRecorded(t, m, evs)
			if strings.Contains(fed, unjudged) {
				t.Fatalf("the guard read the text: %q", fed)
			}
			for _, e := range got.Events {
				if e.Data["type"] == tc.done["type"] && e.Data[tc.member] == unjudged {
					t.Fatalf("the client got %s with %s %q, never judged (the guard read %q); event %v; stream ended with %v",
						e.Data["type"], tc.member, unjudged, fed, e.Data, got.Last.Data["type"])
				}
			}
		})
	}
}

// TestResponsesAttackTextDoneWrongPartTypeFlagged: the same with text the
// guard flags: the client must not read it in response.output_text.done
// while the guard judged only a short refusal.
func TestResponsesAttackTextDoneWrongPartTypeFlagged(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	judged := "No."
	final := attack2Refusal(judged)
	evs := attack2Stream(
		attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at, "part", attack2Refusal(""))...),
		attack2Ev("response.refusal.delta", append(at, "delta", judged)...),
		attack2Ev("response.output_text.done", append(at, "text", testResponse, "logprobs", []any{})...),
		attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed", final)),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", final)})),
	)
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy})
	_, body := postResponses(t, p.URL, respRequest(fc.Prompt, true))
	got := readResponsesStream(t, body)
	for _, e := range got.Events {
		if e.Data["type"] == "response.output_text.done" && e.Data["text"] == testResponse {
			t.Fatalf("the client read the whole flagged answer (%d bytes) in response.output_text.done; the stream ended with %v, audit %v",
				len(testResponse), got.Last.Data["type"], p.lastRecord(t)["event"])
		}
	}
}

// ---- 1b. a final response that is null ----

// TestResponsesAttackFinalResponseNullPanics: a final event whose "response" is
// null (no output: a mismatch once an item was read) must be refused, not
// rewritten into a nil map: a panic in library code, and in Envoy's
// ext_proc, where the relay runs on a goroutine of its own (Call.Stream)
// without recover, the end of the whole process.
func TestResponsesAttackFinalResponseNullPanics(t *testing.T) {
	s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
	for i, d := range []string{
		`{"type":"response.created","sequence_number":0,"response":{"id":"r","object":"response","status":"in_progress","output":[]}}`,
		`{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_1","type":"message","role":"assistant","status":"in_progress","content":[]}}`,
		`{"type":"response.completed","sequence_number":2,"response":null}`,
	} {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("event %d: parse panicked: %v", i, r)
				}
			}()
			if p := s.parse(sseEvent{data: []byte(d)}); p.bad != nil {
				t.Logf("event %d refused: %v", i, p.bad)
			}
		}()
	}
}

// ---- 2. one event's text, in the order the client reads it ----

// TestResponsesAttackOneEventMixedKindsReordered: an event that adds text of
// several kinds — a message added with output_text, refusal, output_text
// parts; a final response that adds a function call and then a message,
// or a message then a reasoning item — is judged in the order the client
// reads it, not grouped by kind (which would judge reasoning after the
// answer inside the think block, before it).
func TestResponsesAttackOneEventMixedKindsReordered(t *testing.T) {
	m := tinyModel(t)
	for _, tc := range []struct {
		name  string
		evs   [][]byte
		order []string // the texts in the order a client reads them
	}{
		{"message parts", attack2Stream(
			attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
			attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress",
				attack2Text("Alpha first. "), attack2Refusal("Bravo second. "), attack2Text("Charlie third."))),
			attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed",
				attack2Text("Alpha first. "), attack2Refusal("Bravo second. "), attack2Text("Charlie third."))),
			attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed",
				attack2Text("Alpha first. "), attack2Refusal("Bravo second. "), attack2Text("Charlie third."))})),
		), []string{"Alpha first.", "Bravo second.", "Charlie third."}},
		{"completed adds a call then a message", attack2Stream(
			attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
			attack2Ev("response.completed", "response", attack2Resp("completed", []any{
				map[string]any{"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "c1", "name": "delete_everything", "arguments": `{"path": "/"}`},
				attack2Msg("msg_1", "completed", attack2Text("Done: I deleted it.")),
			})),
		), []string{"delete_everything", "Done: I deleted it."}},
		{"completed adds a message then reasoning", attack2Stream(
			attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
			attack2Ev("response.completed", "response", attack2Resp("completed", []any{
				attack2Msg("msg_1", "completed", attack2Text("Alpha answer.")),
				map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{map[string]any{"type": "summary_text", "text": "Bravo afterthought."}}},
			})),
		), []string{"Alpha answer.", "Bravo afterthought."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, fed := relayRecorded(t, m, tc.evs)
			if got.Last.Data["type"] != "response.completed" {
				t.Fatalf("last event %v", got.Last.Data)
			}
			last := -1
			for _, s := range tc.order {
				i := strings.Index(fed, s)
				if i < 0 {
					t.Fatalf("the guard never read %q (fed %q)", s, fed)
				}
				if i < last {
					t.Fatalf("the client reads %q in this order, the guard judged them in another: %q", tc.order, fed)
				}
				last = i
			}
		})
	}
}

// ---- 3. the item an event is about: item_id against output_index ----

// TestResponsesAttackItemIDOverOutputIndex: openai-python's and openai-node's
// stream state append a text delta to output[output_index]. A delta
// naming the open message by id and an earlier, done message by index
// would be judged at the end of the open message while the SDKs insert it
// into the earlier one: it is refused.
func TestResponsesAttackItemIDOverOutputIndex(t *testing.T) {
	m := tinyModel(t)
	at0 := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	at1 := []any{"item_id", "msg_2", "output_index", 1, "content_index", 0}
	a, b, c := "Alpha first. ", "Bravo second. ", "Charlie third."
	evs := attack2Stream(
		attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at0, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at0, "delta", a, "logprobs", []any{})...),
		attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed", attack2Text(a))),
		attack2Ev("response.output_item.added", "output_index", 1, "item", attack2Msg("msg_2", "in_progress")),
		attack2Ev("response.content_part.added", append(at1, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at1, "delta", b, "logprobs", []any{})...),
		// item_id the open message, output_index the first one.
		attack2Ev("response.output_text.delta", "item_id", "msg_2", "output_index", 0, "content_index", 0, "delta", c, "logprobs", []any{}),
		attack2Ev("response.output_item.done", "output_index", 1, "item", attack2Msg("msg_2", "completed", attack2Text(b+c))),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", attack2Text(a)), attack2Msg("msg_2", "completed", attack2Text(b+c))})),
	)
	got, fed := relayRecorded(t, m, evs)
	if refused(t, got) {
		return
	}
	snaps, err := sdkClient{}.snapshots(got.Events)
	if err != nil {
		t.Fatalf("the SDK would raise: %v", err)
	}
	if snap := snaps[len(snaps)-1]; !strings.Contains(fed, snap) {
		t.Fatalf("the SDKs assemble %q from the deltas the proxy passed; the guard judged %q", snap, fed)
	}
}

// TestResponsesAttackContentIndexBase: an item that came with parts (in
// output_item.added) numbers them from 0: a content_part.added with
// content_index 0 after one part must not shift the base (to -1), which
// would send later deltas for content_index 0 to the second part while the
// SDKs add them to content[0].
func TestResponsesAttackContentIndexBase(t *testing.T) {
	m := tinyModel(t)
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	a, b, c := "Alpha first. ", "Bravo second. ", "Charlie third."
	evs := attack2Stream(
		attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress", attack2Text(a))),
		attack2Ev("response.content_part.added", append(at, "part", attack2Text(b))...),
		attack2Ev("response.output_text.delta", append(at, "delta", c, "logprobs", []any{})...),
		attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed", attack2Text(a), attack2Text(b+c))),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", attack2Text(a), attack2Text(b+c))})),
	)
	got, fed := relayRecorded(t, m, evs)
	if refused(t, got) {
		return
	}
	snaps, err := sdkClient{}.snapshots(got.Events)
	if err != nil {
		t.Fatalf("the SDK would raise: %v", err)
	}
	if snap := snaps[len(snaps)-1]; !strings.Contains(fed, snap) {
		t.Fatalf("the SDKs assemble %q from the deltas the proxy passed; the guard judged %q", snap, fed)
	}
}

// ---- 4. memory and CPU ----

// attack2Parse runs events through a stream's parse and marks each sent, as
// a stream whose events carry no judged text releases them at once.
func attack2Parse(s *responsesStream, d []byte) error {
	p := s.parse(sseEvent{data: d})
	if p.bad != nil {
		return p.bad
	}
	s.sent(&heldEvent{info: p.info, text: &eventText{}})
	return nil
}

// TestResponsesAttackItemsKeptUnbounded: outState keeps every item's raw JSON
// (as added, in recv and in given), and items without text are released
// at once: their JSON counts against the bound as text does, so a stream
// of reasoning items that carry only encrypted_content (1 MiB each, within
// the 4 MiB event limit) is refused before 40 MiB are held.
func TestResponsesAttackItemsKeptUnbounded(t *testing.T) {
	limit := (&Config{MaxRequestBytes: defaultMaxRequestBytes}).maxResponseBytes()
	s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
	if err := attack2Parse(s, []byte(`{"type":"response.created","sequence_number":0,"response":{"id":"r","object":"response","status":"in_progress","output":[]}}`)); err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("A", 1<<20)
	var kept int64
	for i := 0; kept <= limit+8<<20; i++ {
		d := fmt.Sprintf(`{"type":"response.output_item.added","sequence_number":%d,"output_index":%d,"item":{"id":"rs_%d","type":"reasoning","summary":[],"encrypted_content":"%s"}}`, i+1, i, i, blob)
		if err := attack2Parse(s, []byte(d)); err != nil {
			t.Logf("refused after %d items: %v", i, err)
			return
		}
		kept = 0
		for _, o := range []*outState{&s.recv, &s.given} {
			for _, it := range o.items {
				kept += int64(len(it.raw))
			}
		}
	}
	t.Fatalf("%d items of %d MiB each kept (%d MiB in recv and given, over the %d MiB response limit) without refusal; size counted %d bytes",
		len(s.recv.items), 1, kept>>20, limit>>20, s.recv.size)
}

// TestResponsesAttackRewriteAmplifies: a copy event that disagrees is
// rewritten to the whole part (item, output) as read, however small the
// copy: a ~150-byte response.output_text.done with "text": "" becomes an
// event as large as the part, and text the template drops (the content's
// leading newlines) is never fed, so such events go out at once. Sent
// again and again, the upstream's S bytes would become n*S for the
// client: an item may be copied only as often as the API repeats it.
func TestResponsesAttackRewriteAmplifies(t *testing.T) {
	m := tinyModel(t)
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	nl := strings.Repeat("\n", 128<<10)
	evs := []map[string]any{
		attack2Ev("response.created", "response", attack2Resp("in_progress", []any{})),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at, "delta", nl, "logprobs", []any{})...),
	}
	const n = 300
	for range n {
		evs = append(evs, attack2Ev("response.output_text.done", append(at, "text", "", "logprobs", []any{})...))
	}
	evs = append(evs, attack2Ev("response.output_text.delta", append(at, "delta", "Hello.", "logprobs", []any{})...),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", attack2Text(nl+"Hello."))})))
	in, body, got := relayHoldBack(t, m, attack2Stream(evs...))
	t.Logf("upstream sent %d KiB, the client got %d KiB; last event %v", in>>10, len(body)>>10, got.Last.Data["type"])
	if len(body) > 20*in {
		t.Fatalf("the upstream's %d KiB became %d MiB for the client (x%d): each tiny copy event is rewritten to the whole part",
			in>>10, len(body)>>20, len(body)/in)
	}
}

// ---- 5. the envelope of a response the proxy writes ----

// TestResponsesAttackCutEnvelopeKeepsUpstreamText: the response the proxy
// writes at a cut echoes the request's members (instructions, metadata,
// reasoning, text, user, …) from the client's request, not as the
// upstream wrote them: an upstream that puts the flagged answer there
// must not get it to the client with the cut response.
func TestResponsesAttackCutEnvelopeKeepsUpstreamText(t *testing.T) {
	m := tinyModel(t)
	fc := findFlagCase(t, m, withAnswer(testResponse), 0.5)
	var whole map[string]any
	if err := json.Unmarshal(respSpec{Content: []string{testResponse}}.whole(), &whole); err != nil {
		t.Fatal(err)
	}
	whole["instructions"] = testResponse
	whole["metadata"] = map[string]any{"note": testResponse}
	up := newFakeUpstream(t, upstreamSpec{Whole: mustJSON(whole)})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: fc.Policy, Refusal: RefusalCompletion})
	resp, out := postResponses(t, p.URL, respRequest(fc.Prompt, false))
	var r map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(out, &r) != nil || r["status"] != "incomplete" {
		t.Fatalf("want a cut response: %d %s", resp.StatusCode, out)
	}
	if bytes.Contains(out, []byte(testResponse)) {
		t.Fatalf("the cut response carries the whole flagged answer in its envelope (instructions %q…)", fmt.Sprint(r["instructions"])[:30])
	}
}
