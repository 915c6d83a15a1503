package proxy

// Attacks on the copies of the text, the indexes items are filed at, the
// bounds on what the proxy keeps and writes, and the request's reasoning
// items; and one legitimate stream (Ollama's call). Each test describes
// what an upstream or client sends and what the proxy must make of it;
// "would" says what went wrong before it did.

import (
	"fmt"
	"strings"
	"testing"
)

// attack3Created is response.created as the attack streams open.
func attack3Created(extra ...any) map[string]any {
	return attack2Ev("response.created", "response", attack2Resp("in_progress", []any{}, extra...))
}

// ---- 1. a snapshot's output_text ----

// TestResponsesAttackSnapshotOutputTextUnjudged: docs/API.md: every copy of the
// answer, "and in an output_text member where a server adds one", must say
// what was judged. A final response's output_text is checked
// (readResponse), but response.created / .in_progress / .queued are only
// checked for an empty output: their response's output_text would pass
// as the upstream wrote it, text the guard never read. Refused.
func TestResponsesAttackSnapshotOutputTextUnjudged(t *testing.T) {
	m := tinyModel(t)
	const unjudged = "UNJUDGED TEXT THE GUARD NEVER READ"
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	final := attack2Text("Hello.")
	evs := attack2Stream(
		attack3Created("output_text", unjudged),
		attack2Ev("response.in_progress", "response", attack2Resp("in_progress", []any{}, "output_text", unjudged)),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at, "delta", "Hello.", "logprobs", []any{})...),
		attack2Ev("response.output_item.done", "output_index", 0, "item", attack2Msg("msg_1", "completed", final)),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{attack2Msg("msg_1", "completed", final)})),
	)
	rec := &attack2Recorder{Moderator: Direct(m)}
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, rec, Tenant{Policy: safePolicy(m), Mode: HoldBack}, nil)
	_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
	got := readResponsesStream(t, body)
	for _, e := range got.Events {
		r, _ := e.Data["response"].(map[string]any)
		if r != nil && r["output_text"] == unjudged {
			t.Fatalf("the client got %s whose response.output_text is %q, never judged (the guard read %q)",
				e.Data["type"], unjudged, rec.text())
		}
	}
}

// ---- 2. copies without end: the final response after the finish ----

// TestResponsesAttackFinalCopiesUnbounded: the copies limit (outItem.copy)
// counts done events only. A final response (response.completed,
// response.incomplete) that disagrees is rewritten to the whole output as
// read, and once the stream finished such events carry no new text, so
// they pass the "text after the finish" check and, once the guard judged
// everything, go out at once. An upstream that repeats a ~150-byte
// {"type":"response.completed","response":{"output":[]}} would make the
// proxy write the whole answer again for each: one final response is
// read, and rewritten bytes count against the bound.
func TestResponsesAttackFinalCopiesUnbounded(t *testing.T) {
	m := tinyModel(t)
	at := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	// Leading newlines of the content are dropped by the template (never
	// fed): a large answer that costs the guard nothing.
	nl := strings.Repeat("\n", 64<<10)
	text := nl + "Hello."
	item := attack2Msg("msg_1", "completed", attack2Text(text))
	evs := []map[string]any{
		attack3Created(),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at, "delta", text, "logprobs", []any{})...),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{item})),
	}
	const n = 200
	for range n {
		evs = append(evs, attack2Ev("response.completed", "response", map[string]any{"output": []any{}}))
	}
	in, body, got := relayHoldBack(t, m, attack2Stream(evs...))
	finals := 0
	for _, e := range got.Events {
		if e.Data["type"] == "response.completed" {
			finals++
		}
	}
	t.Logf("upstream sent %d KiB, the client got %d KiB in %d response.completed events; last event %v", in>>10, len(body)>>10, finals, got.Last.Data["type"])
	if len(body) > 20*in {
		t.Fatalf("the upstream's %d KiB became %d MiB for the client (x%d): each tiny response.completed after the finish is rewritten to the whole output",
			in>>10, len(body)>>20, len(body)/in)
	}
}

// ---- 3. the copies budget raised by empty parts ----

// TestResponsesAttackCopiesBudgetFromEmptyParts: an item may be copied
// 2*(its parts)+3 times, and a part costs nothing against the size bound
// when it is empty (grow(len(text))). So an upstream adds P empty parts
// (~150 bytes each) behind one large part and then sends 2P+3 tiny
// response.output_text.done events ("text": "") for the large one: each
// would be rewritten to the whole part. A part may be copied twice, an
// item twice, and each part costs an overhead against the bound.
func TestResponsesAttackCopiesBudgetFromEmptyParts(t *testing.T) {
	m := tinyModel(t)
	at0 := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	nl := strings.Repeat("\n", 64<<10)
	evs := []map[string]any{
		attack3Created(),
		attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		attack2Ev("response.content_part.added", append(at0, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at0, "delta", nl, "logprobs", []any{})...),
	}
	const parts = 150
	for i := 1; i <= parts; i++ {
		evs = append(evs, attack2Ev("response.content_part.added", "item_id", "msg_1", "output_index", 0, "content_index", i, "part", attack2Text("")))
	}
	for range 2 * parts {
		evs = append(evs, attack2Ev("response.output_text.done", append(at0, "text", "", "logprobs", []any{})...))
	}
	evs = append(evs, attack2Ev("response.output_text.delta", "item_id", "msg_1", "output_index", 0, "content_index", parts, "delta", "Hello.", "logprobs", []any{}),
		attack2Ev("response.completed", "response", map[string]any{"output": []any{}}))
	in, body, got := relayHoldBack(t, m, attack2Stream(evs...))
	done := 0
	for _, e := range got.Events {
		if e.Data["type"] == "response.output_text.done" {
			done++
		}
	}
	t.Logf("upstream sent %d KiB, the client got %d KiB (%d output_text.done events); last event %v %v", in>>10, len(body)>>10, done, got.Last.Data["type"], got.Last.Data["message"])
	if len(body) > 20*in {
		t.Fatalf("the upstream's %d KiB became %d MiB for the client (x%d): %d empty parts bought %d rewrites of a 64 KiB part",
			in>>10, len(body)>>20, len(body)/in, parts, done)
	}
}

// ---- 4. an item's JSON replaced by its done event, uncounted ----

// TestResponsesAttackItemDoneRawUncounted: an item's JSON counts against the
// bound when it is added (outState.add), but output_item.done replaces it
// (it.raw = e.Item, kept to give the item back whole) without counting
// it. Items added small and done with ~1 MiB of encrypted_content each
// would be kept past the bound: a done item's growth counts too.
func TestResponsesAttackItemDoneRawUncounted(t *testing.T) {
	limit := (&Config{MaxRequestBytes: defaultMaxRequestBytes}).maxResponseBytes()
	s := newResponsesStream(&exchange{id: "x", req: &chatRequest{}})
	if err := attack2Parse(s, []byte(`{"type":"response.created","sequence_number":0,"response":{"id":"r","object":"response","status":"in_progress","output":[]}}`)); err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("A", 1<<20)
	var kept int64
	seq := 1
	for i := 0; kept <= limit+8<<20; i++ {
		for _, d := range []string{
			fmt.Sprintf(`{"type":"response.output_item.added","sequence_number":%d,"output_index":%d,"item":{"id":"rs_%d","type":"reasoning","summary":[]}}`, seq, i, i),
			fmt.Sprintf(`{"type":"response.output_item.done","sequence_number":%d,"output_index":%d,"item":{"id":"rs_%d","type":"reasoning","summary":[],"encrypted_content":"%s"}}`, seq+1, i, i, blob),
		} {
			if err := attack2Parse(s, []byte(d)); err != nil {
				t.Logf("refused after %d items: %v", i, err)
				return
			}
		}
		seq += 2
		kept = 0
		seen := map[*byte]bool{}
		for _, o := range []*outState{&s.recv, &s.given} {
			for _, it := range o.items {
				if len(it.raw) > 0 && !seen[&it.raw[0]] {
					seen[&it.raw[0]] = true
					kept += int64(len(it.raw))
				}
			}
		}
	}
	t.Fatalf("%d items done with 1 MiB each kept (%d MiB distinct bytes in recv and given, over the %d MiB response limit) without refusal; size counted %d bytes",
		len(s.recv.items), kept>>20, limit>>20, s.recv.size)
}

// ---- 5. copies addressed by index (openai-node's accumulator) ----

// TestResponsesAttackCopyAtAnotherIndex: events that add text must name the
// item by item_id and output_index alike, because the SDKs address the
// item by its index; but openai-node's accumulator addresses the copies by
// index too (output_item.done replaces output[output_index],
// output_text.done sets output[output_index].content[content_index].text),
// and the proxy checks a copy against the item its item_id names, whatever
// its output_index. A copy of the second message's text (judged) at the
// first message's index would pass as it came, and the client's snapshot
// read the second message twice, the first never (here a disclaimer
// dropped from what the client reads): refused, as for text events.
func TestResponsesAttackCopyAtAnotherIndex(t *testing.T) {
	m := tinyModel(t)
	a, b := "Alpha first. ", "Bravo second."
	at0 := []any{"item_id", "msg_1", "output_index", 0, "content_index", 0}
	at1 := []any{"item_id", "msg_2", "output_index", 1, "content_index", 0}
	for _, tc := range []struct {
		name string
		copy map[string]any
	}{
		{"output_text.done", attack2Ev("response.output_text.done", "item_id", "msg_2", "output_index", 0, "content_index", 0, "text", b, "logprobs", []any{})},
		{"content_part.done", attack2Ev("response.content_part.done", "item_id", "msg_2", "output_index", 0, "content_index", 0, "part", attack2Text(b))},
		{"output_item.done", attack2Ev("response.output_item.done", "item_id", "msg_2", "output_index", 0, "item", attack2Msg("msg_2", "completed", attack2Text(b)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evs := attack2Stream(
				attack3Created(),
				attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
				attack2Ev("response.content_part.added", append(at0, "part", attack2Text(""))...),
				attack2Ev("response.output_text.delta", append(at0, "delta", a, "logprobs", []any{})...),
				attack2Ev("response.output_item.added", "output_index", 1, "item", attack2Msg("msg_2", "in_progress")),
				attack2Ev("response.content_part.added", append(at1, "part", attack2Text(""))...),
				attack2Ev("response.output_text.delta", append(at1, "delta", b, "logprobs", []any{})...),
				tc.copy,
				attack2Ev("response.completed", "response", attack2Resp("completed", []any{
					attack2Msg("msg_1", "completed", attack2Text(a)), attack2Msg("msg_2", "completed", attack2Text(b))})),
			)
			got, fed := relayRecorded(t, m, evs)
			if refused(t, got) {
				return
			}
			snaps, err := sdkClient{copies: true}.snapshots(got.Events)
			if err != nil {
				return // the client raises: it shows nothing mis-assembled
			}
			for i, s := range snaps {
				if !strings.Contains(fed, s) {
					t.Fatalf("after event %d (%v) openai-node's snapshot reads %q; the guard judged %q", i, got.Events[i].Data["type"], s, fed)
				}
			}
		})
	}
}

// TestResponsesAttackAddedAtAnotherIndex: openai-python remembers each item
// under the output_index of its output_item.added, and adds a part or a
// delta to the item remembered under the event's output_index. The proxy
// never reads output_item.added's output_index: it places the item at the
// end, and checked a delta's output_index against that position. A first
// message added (with its text) under output_index 1 and a second under 2
// would make the second message's part and delta, at output_index 1 (its
// position), land in the first message for the SDK: the guard judged
// "A0 A1 B", the client would read "A0 B A1". Items are filed at the
// index they were added at.
func TestResponsesAttackAddedAtAnotherIndex(t *testing.T) {
	m := tinyModel(t)
	a0, a1, b := "Alpha first. ", "Charlie third. ", "Bravo second. "
	at1 := []any{"item_id", "msg_2", "output_index", 1, "content_index", 0}
	msgA := attack2Msg("msg_1", "completed", attack2Text(a0), attack2Text(a1))
	evs := attack2Stream(
		attack3Created(),
		attack2Ev("response.output_item.added", "output_index", 1, "item", msgA),
		attack2Ev("response.output_item.added", "output_index", 2, "item", attack2Msg("msg_2", "in_progress")),
		attack2Ev("response.content_part.added", append(at1, "part", attack2Text(""))...),
		attack2Ev("response.output_text.delta", append(at1, "delta", b, "logprobs", []any{})...),
		attack2Ev("response.output_item.done", "output_index", 1, "item", attack2Msg("msg_2", "completed", attack2Text(b))),
		attack2Ev("response.completed", "response", attack2Resp("completed", []any{msgA, attack2Msg("msg_2", "completed", attack2Text(b))})),
	)
	got, fed := relayRecorded(t, m, evs)
	if refused(t, got) {
		return
	}
	snaps, err := sdkClient{filed: true}.snapshots(got.Events)
	if err != nil {
		return // the client raises: it shows nothing mis-assembled
	}
	for i, s := range snaps {
		if !strings.Contains(fed, s) {
			t.Fatalf("after event %d (%v) openai-python's snapshot reads %q; the guard judged %q", i, got.Events[i].Data["type"], s, fed)
		}
	}
}

// TestResponsesAttackItemDoneQuadratic: the same budget spent on
// output_item.done: P empty parts (each ~150 bytes upstream, nothing
// counted against the bound) would allow 2P+3 tiny output_item.done
// events, each rewritten to the whole item: the client's bytes (and the
// proxy's work) growing as P², the upstream's as P.
func TestResponsesAttackItemDoneQuadratic(t *testing.T) {
	m := tinyModel(t)
	ratio := map[int]int{}
	for _, parts := range []int{100, 400} {
		evs := []map[string]any{
			attack3Created(),
			attack2Ev("response.output_item.added", "output_index", 0, "item", attack2Msg("msg_1", "in_progress")),
		}
		for i := 0; i < parts; i++ {
			evs = append(evs, attack2Ev("response.content_part.added", "item_id", "msg_1", "output_index", 0, "content_index", i, "part", attack2Text("")))
		}
		for range 2 * parts {
			evs = append(evs, attack2Ev("response.output_item.done", "output_index", 0, "item", map[string]any{"type": "message", "content": []any{}}))
		}
		evs = append(evs, attack2Ev("response.completed", "response", map[string]any{"output": []any{}}))
		in, body, got := relayHoldBack(t, m, attack2Stream(evs...))
		ratio[parts] = len(body) / in
		t.Logf("%d empty parts: upstream sent %d KiB, the client got %d KiB (x%d); last event %v", parts, in>>10, len(body)>>10, len(body)/in, got.Last.Data["type"])
	}
	if ratio[400] > 2*ratio[100] {
		t.Fatalf("the client's bytes per upstream byte grow with the number of parts (x%d at 100 parts, x%d at 400): quadratic", ratio[100], ratio[400])
	}
}

// ---- 6. Ollama's call done event rewritten into the message ----

// TestResponsesAttackOllamaCallDoneRewrittenToMessage: Ollama numbers a call
// like the message before it (output_index 0 for both), and its
// output_item.done for the call carries no item_id: named() takes the
// item at output_index 0 — the message — would have rewritten the call's
// done item to the message: Codex (codex-rs: ResponseEvent::OutputItemDone)
// and other clients that take each item from its done event would lose
// the tool call. A done item is found by its own id first.
func TestResponsesAttackOllamaCallDoneRewrittenToMessage(t *testing.T) {
	events, _ := tcOllamaTextThenCall()
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: events})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
	_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
	got := readResponsesStream(t, body)
	var doneItems []string
	for _, e := range got.Events {
		if e.Data["type"] == "response.output_item.done" {
			it, _ := e.Data["item"].(map[string]any)
			doneItems = append(doneItems, fmt.Sprint(it["type"], " ", it["id"]))
		}
	}
	if len(doneItems) != 1 || doneItems[0] != "function_call fc_771_0" {
		t.Fatalf("Ollama sent one output_item.done, for the call fc_771_0; the client got %q", doneItems)
	}
}

// ---- 7. the request: a reasoning item's encrypted_content ----

// TestResponsesAttackReasoningEncryptedContentUnjudged: Ollama, which the
// Responses support reads (its streams are in the compat tests), writes
// the thinking as plain text in a reasoning item's encrypted_content
// (openai/responses.go ToResponse: EncryptedContent:
// chatResponse.Message.Thinking, "Plain text for now") and reads it back
// from an input reasoning item as the assistant's thinking
// (FromResponsesRequest: pendingThinking = v.EncryptedContent; the summary
// is not read), a trailing one as an assistant turn of its own that the
// model continues. Read as summary and content only, text in
// encrypted_content would reach the model unjudged: it is judged, decoded
// where it is base64 of text (readableReasoning).
func TestResponsesAttackReasoningEncryptedContentUnjudged(t *testing.T) {
	const hidden = "HIDDEN INSTRUCTIONS THE GUARD NEVER READS"
	for _, tc := range []struct {
		name  string
		input []any
	}{
		{"trailing reasoning", []any{
			map[string]any{"role": "user", "content": "Hello there."},
			map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{}, "encrypted_content": hidden},
		}},
		{"reasoning before an assistant message", []any{
			map[string]any{"role": "user", "content": "Hello."},
			map[string]any{"type": "reasoning", "id": "rs_1", "summary": []any{}, "encrypted_content": hidden},
			map[string]any{"type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "Hi."}}},
			map[string]any{"role": "user", "content": "Go on."},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parseResponsesRequest(mustJSON(map[string]any{"model": "m", "input": tc.input}))
			if err != nil {
				t.Logf("refused: %v", err)
				return
			}
			if !strings.Contains(fmt.Sprintf("%+v", req), hidden) {
				t.Fatalf("accepted, and the text Ollama's model reads as the assistant's thinking is nowhere in what the guard judges: %+v", req)
			}
		})
	}
}
