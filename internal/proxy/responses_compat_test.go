package proxy

// What real clients and servers send to and from the Responses API: each
// test replays one, built from the source cited beside it, and checks
// that the proxy reads it (a safe answer passes as it came, or with its
// copies rewritten to what was judged where the server's copies disagree
// with its deltas).

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// ---- helpers ----

// tcEv is an SSE event as servers that name their events write it
// (OpenAI, vLLM, Ollama, llama.cpp): "event: <type>" then the data.
func tcEv(typ string, m map[string]any) []byte {
	m["type"] = typ
	return namedEvent(typ, m)
}

// tcSeq numbers events 0.. in order, as vLLM's
// _increment_sequence_number_and_return and Ollama's newEvent do.
type tcSeq struct {
	n   int
	out [][]byte
}

func (s *tcSeq) ev(typ string, m map[string]any) {
	m["sequence_number"] = s.n
	s.n++
	s.out = append(s.out, tcEv(typ, m))
}

// tcResp is a response object as the servers below send it.
func tcResp(id, status string, output []any, extra ...any) map[string]any {
	r := map[string]any{"id": id, "object": "response", "created_at": 1700000000, "status": status,
		"model": "fake-llm", "output": output, "usage": nil, "tools": []any{}, "error": nil, "incomplete_details": nil}
	for i := 0; i+1 < len(extra); i += 2 {
		r[extra[i].(string)] = extra[i+1]
	}
	return r
}

// tcStreamPasses posts a streamed request through the proxy to an upstream
// that sends events, with a policy that flags nothing, and fails unless
// the client gets the upstream's stream byte for byte (a safe answer must
// pass as it came).
func tcStreamPasses(t *testing.T, events [][]byte) {
	t.Helper()
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: events})
	p := newResponsesProxy(t, up.URL, m, Tenant{Name: "t1", Policy: safePolicy(m)})
	resp, body := postResponses(t, p.URL, respRequest("Hello there.", true))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if bytes.Equal(body, up.streamBody()) {
		return
	}
	got := readResponsesStream(t, body)
	t.Fatalf("a safe answer did not pass as it came; last event the client got: %v", got.Last.Data)
}

// tcWholePasses posts a non-streamed request to an upstream that answers
// body and fails unless the client gets it as it came.
func tcWholePasses(t *testing.T, whole []byte) {
	t.Helper()
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Whole: whole})
	p := newResponsesProxy(t, up.URL, m, Tenant{Name: "t1", Policy: safePolicy(m)})
	resp, body := postResponses(t, p.URL, respRequest("Hello there.", false))
	if resp.StatusCode != 200 || !bytes.Equal(body, whole) {
		t.Fatalf("a safe whole answer did not pass as it came: %d %s", resp.StatusCode, body)
	}
}

// tcRequestParses fails unless parseResponsesRequest accepts body.
func tcRequestParses(t *testing.T, body map[string]any) *chatRequest {
	t.Helper()
	req, err := parseResponsesRequest(mustJSON(body))
	if err != nil {
		t.Fatalf("a real client's request refused: %v", err)
	}
	return req
}

// ---- vLLM ----

// vLLM's simple (non-harmony) stream, current main:
// vllm/entrypoints/openai/responses/streaming_events.py
// (emit_simple_reasoning_open / _delta / _done, emit_simple_content_*),
// serialised by responses/api_router.py as "event: {type}\ndata:
// {model_dump_json}" with sequence numbers from serving.py
// (_increment_sequence_number_and_return). Item ids are random_uuid()
// (no prefix). Nulls are the pydantic defaults model_dump_json writes.
func tcVLLMReasoningStream(completedIDs [2]string) [][]byte {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	rid, mid := "9f1c2d3e4a5b6c7d", "0a1b2c3d4e5f6071"
	reasoning := []string{"The user greets", " me."}
	rtext := strings.Join(reasoning, "")
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": rid, "type": "reasoning", "summary": []any{}, "status": "in_progress", "content": nil, "encrypted_content": nil}})
	s.ev("response.reasoning_part.added", map[string]any{"output_index": 0, "item_id": rid, "content_index": 0,
		"part": map[string]any{"text": "", "type": "reasoning_text"}})
	for _, d := range reasoning {
		s.ev("response.reasoning_text.delta", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "delta": d})
	}
	rpart := map[string]any{"text": rtext, "type": "reasoning_text"}
	s.ev("response.reasoning_text.done", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "text": rtext})
	s.ev("response.reasoning_part.done", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "part": rpart})
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": map[string]any{
		"id": rid, "type": "reasoning", "summary": []any{}, "status": "completed", "content": []any{rpart}, "encrypted_content": nil}})
	content := []string{"Hello", "! How can I help?"}
	ctext := strings.Join(content, "")
	s.ev("response.output_item.added", map[string]any{"output_index": 1, "item": map[string]any{
		"id": mid, "type": "message", "role": "assistant", "content": []any{}, "status": "in_progress"}})
	s.ev("response.content_part.added", map[string]any{"output_index": 1, "item_id": mid, "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}})
	for _, d := range content {
		s.ev("response.output_text.delta", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "delta": d, "logprobs": []any{}})
	}
	cpart := map[string]any{"type": "output_text", "text": ctext, "annotations": []any{}, "logprobs": nil}
	s.ev("response.output_text.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "text": ctext, "logprobs": []any{}})
	s.ev("response.content_part.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "part": cpart})
	// emit_simple_content_done passes summary=[] to ResponseOutputMessage
	// (an extra field pydantic keeps).
	s.ev("response.output_item.done", map[string]any{"output_index": 1, "item": map[string]any{
		"id": mid, "type": "message", "role": "assistant", "content": []any{cpart}, "status": "completed", "summary": []any{}}})
	// serving.py responses_stream_generator: response.completed carries
	// responses_full_generator's response, whose output
	// _make_response_output_items builds anew from the final text
	// (vllm/parser ... DelegatingParser.extract_response_outputs: ids
	// "rs_"+random_uuid(), "msg_"+random_uuid(); status None on reasoning).
	if completedIDs[0] == "" {
		completedIDs = [2]string{rid, mid}
	}
	out := []any{
		map[string]any{"id": completedIDs[0], "type": "reasoning", "summary": []any{}, "status": nil, "content": []any{rpart}, "encrypted_content": nil},
		map[string]any{"id": completedIDs[1], "type": "message", "role": "assistant", "status": "completed", "content": []any{cpart}},
	}
	s.ev("response.completed", map[string]any{"response": tcResp("resp_abc", "completed", out,
		"usage", map[string]any{"input_tokens": 12, "output_tokens": 9, "total_tokens": 21})})
	return s.out
}

// TestResponsesCompatVLLMReasoningPartEvents: vLLM streams a reasoning item's
// content part with its own event types, response.reasoning_part.added
// and response.reasoning_part.done (vllm/entrypoints/openai/responses/
// protocol.py ResponseReasoningPartAddedEvent; streaming_events.py
// emit_simple_reasoning_open, emit_reasoning_delta_events for gpt-oss).
// Every vLLM reasoning model (--reasoning-parser qwen3, deepseek_r1, gpt-oss
// always) sends them. Here the completed response repeats the streamed ids,
// so only the event type is at issue.
func TestResponsesCompatVLLMReasoningPartEvents(t *testing.T) {
	tcStreamPasses(t, tcVLLMReasoningStream([2]string{}))
}

// TestResponsesCompatVLLMCompletedNewIDs: vLLM's response.completed is
// responses_full_generator's response: its output items are re-parsed from
// the final text with fresh ids (msg_<uuid>) that are not the streamed ones
// (serving.py responses_stream_generator, _make_response_output_items; the
// parser's extract_response_outputs and, without a parser, the fallback
// ResponseOutputMessage(id=f"msg_{random_uuid()}")). A plain text answer,
// no reasoning, no tools: every vLLM stream ends so.
func TestResponsesCompatVLLMCompletedNewIDs(t *testing.T) {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	mid := "0a1b2c3d4e5f6071"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": mid, "type": "message", "role": "assistant", "content": []any{}, "status": "in_progress"}})
	s.ev("response.content_part.added", map[string]any{"output_index": 0, "item_id": mid, "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "delta": "Hello!", "logprobs": []any{}})
	part := map[string]any{"type": "output_text", "text": "Hello!", "annotations": []any{}, "logprobs": nil}
	s.ev("response.output_text.done", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "text": "Hello!", "logprobs": []any{}})
	s.ev("response.content_part.done", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "part": part})
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": map[string]any{
		"id": mid, "type": "message", "role": "assistant", "content": []any{part}, "status": "completed", "summary": []any{}}})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_abc", "completed", []any{
		map[string]any{"id": "msg_5e6f7a8b9c0d1e2f", "type": "message", "role": "assistant", "status": "completed", "content": []any{part}},
	})})
	tcStreamPasses(t, s.out)
}

// TestResponsesCompatVLLMGptOssFunctionCallDone: vLLM's gpt-oss (harmony) path
// builds the function call's output_item.done item with
// ResponseFunctionToolCall(..., item_id=..., output_index=...,
// sequence_number=-1, ...) and no id (streaming_events.py
// emit_function_call_done_events): the openai types keep extra fields, so
// the item carries "item_id": "fc_..." — a string in a field the closed
// item shape does not know. (The events before it are what
// emit_function_call_delta_events sends.)
func TestResponsesCompatVLLMGptOssFunctionCallDone(t *testing.T) {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	fc := "fc_3c4d5e6f"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": fc, "type": "function_call", "name": "get_weather", "call_id": "call_7a8b", "arguments": "", "status": "in_progress"}})
	s.ev("response.function_call_arguments.delta", map[string]any{"item_id": fc, "output_index": 0, "delta": `{"city":"Paris"}`})
	s.ev("response.function_call_arguments.done", map[string]any{"item_id": fc, "output_index": 0, "arguments": `{"city":"Paris"}`, "name": "get_weather"})
	item := map[string]any{"id": nil, "type": "function_call", "name": "get_weather", "arguments": `{"city":"Paris"}`,
		"call_id": "call_7a8b", "status": "completed", "item_id": fc, "output_index": 0, "sequence_number": -1}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": item})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_abc", "completed", []any{item})})
	tcStreamPasses(t, s.out)
}

// TestResponsesCompatVLLMGptOssContentIndex: vLLM's gpt-oss stream numbers
// content_index across the whole response, not per item: StreamingState
// starts current_content_index at -1, adds one for every item it opens and
// reset_for_new_item never resets it (streaming_events.py), so the message
// after the reasoning item has its only part at content_index 1. This
// stream uses content_part.added for the reasoning part (so the
// reasoning_part event type is not at issue) and keeps the ids in
// response.completed.
func TestResponsesCompatVLLMGptOssContentIndex(t *testing.T) {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	rid, mid := "msg_r1", "msg_m2"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": rid, "type": "reasoning", "summary": []any{}, "status": "in_progress"}})
	s.ev("response.content_part.added", map[string]any{"output_index": 0, "item_id": rid, "content_index": 0,
		"part": map[string]any{"text": "", "type": "reasoning_text"}})
	s.ev("response.reasoning_text.delta", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "delta": "Greet back."})
	rpart := map[string]any{"text": "Greet back.", "type": "reasoning_text"}
	s.ev("response.reasoning_text.done", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "text": "Greet back."})
	s.ev("response.content_part.done", map[string]any{"item_id": rid, "output_index": 0, "content_index": 0, "part": rpart})
	ritem := map[string]any{"id": rid, "type": "reasoning", "summary": []any{}, "status": "completed", "content": []any{rpart}}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": ritem})
	s.ev("response.output_item.added", map[string]any{"output_index": 1, "item": map[string]any{
		"id": mid, "type": "message", "role": "assistant", "content": []any{}, "status": "in_progress"}})
	s.ev("response.content_part.added", map[string]any{"output_index": 1, "item_id": mid, "content_index": 1,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": mid, "output_index": 1, "content_index": 1, "delta": "Hi!", "logprobs": []any{}})
	cpart := map[string]any{"type": "output_text", "text": "Hi!", "annotations": []any{}}
	s.ev("response.output_text.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 1, "text": "Hi!", "logprobs": []any{}})
	s.ev("response.content_part.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 1, "part": cpart})
	mitem := map[string]any{"id": mid, "type": "message", "role": "assistant", "content": []any{cpart}, "status": "completed"}
	s.ev("response.output_item.done", map[string]any{"output_index": 1, "item": mitem})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_abc", "completed", []any{ritem, mitem})})
	tcStreamPasses(t, s.out)
}

// TestResponsesCompatSGLangReasoningPartAsOutputText: SGLang's gpt-oss stream
// opens the reasoning item's part with content_part.added whose part is an
// output_text ("TODO: migrate this to ResponseReasoningTextContent"), then
// streams response.reasoning_text.delta into it
// (sgl-project/sglang python/sglang/srt/entrypoints/openai/
// serving_responses.py, responses_stream_generator). Ids and the completed
// response are kept consistent here so that only the part type is at issue.
func TestResponsesCompatSGLangReasoningPartAsOutputText(t *testing.T) {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_abc", "in_progress", []any{})})
	id := "item_5d6e7f"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": id, "type": "reasoning", "summary": []any{}, "status": "in_progress", "content": nil, "encrypted_content": nil}})
	s.ev("response.content_part.added", map[string]any{"output_index": 0, "item_id": id, "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": nil}})
	s.ev("response.reasoning_text.delta", map[string]any{"item_id": id, "output_index": 0, "content_index": 0, "delta": "Greet back."})
	item := map[string]any{"id": id, "type": "reasoning", "summary": []any{}, "status": "completed",
		"content": []any{map[string]any{"type": "output_text", "text": "Greet back.", "annotations": []any{}}}}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": item})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_abc", "completed", []any{item})})
	tcStreamPasses(t, s.out)
}

// ---- OpenAI ----

// tcOpenAIStream is a gpt-5 answer as api.openai.com streams it to
// openai-python (src/openai/types/responses: ResponseReasoningItem,
// ResponseReasoningSummaryPart*/Text* events with summary_index,
// ResponseTextDeltaEvent with logprobs and the obfuscation padding,
// ResponseOutputMessage with phase, ResponseFunctionCallArguments*Event
// with name), with extra events inserted after index at.
func tcOpenAIStream(at int, extra ...[]byte) [][]byte {
	var s tcSeq
	resp := func(status string, out []any) map[string]any {
		return tcResp("resp_68b1", status, out, "instructions", "Be brief.", "parallel_tool_calls", true,
			"reasoning", map[string]any{"effort": "medium", "summary": "auto"}, "store", false,
			"text", map[string]any{"format": map[string]any{"type": "text"}, "verbosity": "medium"}, "tool_choice", "auto",
			"prompt_cache_key", "sess-1", "safety_identifier", nil, "service_tier", "default", "truncation", "disabled", "metadata", map[string]any{})
	}
	s.ev("response.created", map[string]any{"response": resp("in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": resp("in_progress", []any{})})
	rs := "rs_68b1a"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{
		"id": rs, "type": "reasoning", "summary": []any{}, "encrypted_content": "gAAAAABo-partial"}})
	var summary []any
	for i, text := range []string{"**Planning** the reply", "**Checking** the weather"} {
		at := map[string]any{"item_id": rs, "output_index": 0, "summary_index": i}
		s.ev("response.reasoning_summary_part.added", withMembers(at, "part", map[string]any{"type": "summary_text", "text": ""}))
		for _, d := range strings.SplitAfter(text, " ") {
			s.ev("response.reasoning_summary_text.delta", withMembers(at, "delta", d, "obfuscation", "k2Zq"))
		}
		s.ev("response.reasoning_summary_text.done", withMembers(at, "text", text))
		part := map[string]any{"type": "summary_text", "text": text}
		s.ev("response.reasoning_summary_part.done", withMembers(at, "part", part))
		summary = append(summary, part)
	}
	ritem := map[string]any{"id": rs, "type": "reasoning", "summary": summary, "encrypted_content": "gAAAAABo-full"}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": ritem})
	items := []any{ritem}
	for i, m := range []struct{ phase, text string }{{"commentary", "Let me check."}, {"final_answer", "It is sunny in Paris."}} {
		idx := len(items)
		id := fmt.Sprintf("msg_68b1%d", i)
		at := map[string]any{"item_id": id, "output_index": idx, "content_index": 0}
		s.ev("response.output_item.added", map[string]any{"output_index": idx, "item": map[string]any{
			"id": id, "type": "message", "status": "in_progress", "content": []any{}, "role": "assistant", "phase": m.phase}})
		s.ev("response.content_part.added", withMembers(at, "part", map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": ""}))
		for _, d := range strings.SplitAfter(m.text, " ") {
			s.ev("response.output_text.delta", withMembers(at, "delta", d, "logprobs", []any{}, "obfuscation", "Qx9"))
		}
		s.ev("response.output_text.done", withMembers(at, "text", m.text, "logprobs", []any{}))
		part := map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": m.text}
		s.ev("response.content_part.done", withMembers(at, "part", part))
		item := map[string]any{"id": id, "type": "message", "status": "completed", "content": []any{part}, "role": "assistant", "phase": m.phase}
		s.ev("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		items = append(items, item)
		if i == 0 {
			fc := map[string]any{"id": "fc_68b1", "type": "function_call", "status": "in_progress", "arguments": "", "call_id": "call_Xy", "name": "get_weather"}
			fidx := len(items)
			s.ev("response.output_item.added", map[string]any{"output_index": fidx, "item": fc})
			args := `{"city":"Paris"}`
			for _, d := range []string{`{"city"`, `:"Paris"}`} {
				s.ev("response.function_call_arguments.delta", map[string]any{"item_id": "fc_68b1", "output_index": fidx, "delta": d, "obfuscation": "aB"})
			}
			s.ev("response.function_call_arguments.done", map[string]any{"item_id": "fc_68b1", "output_index": fidx, "arguments": args, "name": "get_weather"})
			done := withMembers(fc, "status", "completed", "arguments", args)
			s.ev("response.output_item.done", map[string]any{"output_index": fidx, "item": done})
			items = append(items, done)
		}
	}
	s.ev("response.completed", map[string]any{"response": withMembers(resp("completed", items),
		"usage", map[string]any{"input_tokens": 30, "input_tokens_details": map[string]any{"cached_tokens": 0},
			"output_tokens": 120, "output_tokens_details": map[string]any{"reasoning_tokens": 64}, "total_tokens": 150})})
	out := append([][]byte(nil), s.out[:at]...)
	out = append(out, extra...)
	return append(out, s.out[at:]...)
}

// TestResponsesCompatOpenAIStream (works): OpenAI's ordinary gpt-5 stream —
// two summary parts with obfuscation, encrypted_content growing from added
// to done, a commentary and a final_answer message (phase), a function
// call whose done event names it — passes as it came.
func TestResponsesCompatOpenAIStream(t *testing.T) {
	tcStreamPasses(t, tcOpenAIStream(0))
}

// TestResponsesCompatOpenAIKeepalive: while a reasoning model thinks, OpenAI's
// Responses backend sends a heartbeat about every 30 s:
// "event: keepalive\ndata: {"type":"keepalive","sequence_number":N}"
// (seen by the gateways and clients that had to skip it: e.g. Codex
// gateways' isHeartbeatEventType "ping"/"keepalive", and clients listing
// {"type":"keepalive","sequence_number":3} as a known no-op event; it is
// numbered like any event). Long reasoning (effort high, > 30 s before the
// first summary) therefore meets it after response.in_progress.
func TestResponsesCompatOpenAIKeepalive(t *testing.T) {
	// (The heartbeat here repeats number 2; the proxy does not check the
	// numbering, so that is not what is tested.)
	ka := []byte("event: keepalive\ndata: {\"type\":\"keepalive\",\"sequence_number\":2}\n\n")
	tcStreamPasses(t, tcOpenAIStream(2, ka))
}

// TestResponsesCompatDataOnlyAndDone (works): a stream with no event: lines
// that ends with data: [DONE] (the OpenResponses spec's terminator, as
// OpenRouter and gateways send it) passes.
func TestResponsesCompatDataOnlyAndDone(t *testing.T) {
	var out [][]byte
	spec := respSpec{Summary: []string{"Hm."}, Content: []string{"Hi", " there."}}
	for _, e := range spec.events() {
		out = append(out, bytes.SplitN(e, []byte("\n"), 2)[1])
	}
	out = append(out, []byte("data: [DONE]\n\n"))
	tcStreamPasses(t, out)
}

// ---- Ollama ----

// tcOllamaPrelude is Ollama's response.created/in_progress
// (ollama/ollama openai/responses.go, buildResponseObject).
func tcOllamaPrelude(s *tcSeq) {
	for _, typ := range []string{"response.created", "response.in_progress"} {
		s.ev(typ, map[string]any{"response": tcResp("resp_123", "in_progress", []any{}, "completed_at", nil,
			"previous_response_id", nil, "instructions", nil, "truncation", "disabled", "parallel_tool_calls", true,
			"text", map[string]any{"format": map[string]any{"type": "text"}}, "top_p", 1.0, "presence_penalty", 0,
			"frequency_penalty", 0, "top_logprobs", 0, "temperature", 1.0, "reasoning", nil, "max_output_tokens", nil,
			"max_tool_calls", nil, "store", false, "background", false, "service_tier", "default", "metadata", map[string]any{},
			"safety_identifier", nil, "prompt_cache_key", nil)})
	}
}

// TestResponsesCompatOllamaThinking (works): Ollama streams thinking as a
// reasoning summary with no reasoning_summary_part.added and copies the
// thinking into encrypted_content (processThinking, finishReasoning), then
// the message (processTextContent, processCompletion).
func TestResponsesCompatOllamaThinking(t *testing.T) {
	var s tcSeq
	tcOllamaPrelude(&s)
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": "rs_4711", "type": "reasoning", "summary": []any{}}})
	for _, d := range []string{"The user", " says hi."} {
		s.ev("response.reasoning_summary_text.delta", map[string]any{"item_id": "rs_4711", "output_index": 0, "summary_index": 0, "delta": d})
	}
	think := "The user says hi."
	s.ev("response.reasoning_summary_text.done", map[string]any{"item_id": "rs_4711", "output_index": 0, "summary_index": 0, "text": think})
	ritem := map[string]any{"id": "rs_4711", "type": "reasoning", "summary": []any{map[string]any{"type": "summary_text", "text": think}}, "encrypted_content": think}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": ritem})
	s.ev("response.output_item.added", map[string]any{"output_index": 1, "item": map[string]any{"id": "msg_456", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}})
	s.ev("response.content_part.added", map[string]any{"item_id": "msg_456", "output_index": 1, "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": "msg_456", "output_index": 1, "content_index": 0, "delta": "Hello!", "logprobs": []any{}})
	part := map[string]any{"type": "output_text", "text": "Hello!", "annotations": []any{}, "logprobs": []any{}}
	s.ev("response.output_text.done", map[string]any{"item_id": "msg_456", "output_index": 1, "content_index": 0, "text": "Hello!", "logprobs": []any{}})
	s.ev("response.content_part.done", map[string]any{"item_id": "msg_456", "output_index": 1, "content_index": 0, "part": part})
	mitem := map[string]any{"id": "msg_456", "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
	s.ev("response.output_item.done", map[string]any{"output_index": 1, "item": mitem})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_123", "completed", []any{ritem, mitem})})
	tcStreamPasses(t, s.out)
}

// tcOllamaTextThenCall is Ollama's stream of a sentence and then a tool
// call (see TestResponsesCompatOllamaTextThenToolCall), and the call's
// arguments.
func tcOllamaTextThenCall() ([][]byte, string) {
	var s tcSeq
	tcOllamaPrelude(&s)
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": "msg_456", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}})
	s.ev("response.content_part.added", map[string]any{"item_id": "msg_456", "output_index": 0, "content_index": 0,
		"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}, "logprobs": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": "msg_456", "output_index": 0, "content_index": 0, "delta": "Let me check.", "logprobs": []any{}})
	args := `{"city":"Paris"}`
	fc := map[string]any{"id": "fc_771_0", "type": "function_call", "status": "in_progress", "call_id": "call_abc", "name": "get_weather", "arguments": ""}
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": fc})
	s.ev("response.function_call_arguments.delta", map[string]any{"item_id": "fc_771_0", "output_index": 0, "delta": args})
	s.ev("response.function_call_arguments.done", map[string]any{"item_id": "fc_771_0", "output_index": 0, "arguments": args})
	done := withMembers(fc, "status", "completed", "arguments", args)
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": done})
	msg := map[string]any{"id": "msg_456", "type": "message", "status": "completed", "role": "assistant",
		"content": []any{map[string]any{"type": "output_text", "text": "Let me check.", "annotations": []any{}, "logprobs": []any{}}}}
	s.ev("response.completed", map[string]any{"response": tcResp("resp_123", "completed", []any{done, msg})})
	return s.out, args
}

// TestResponsesCompatOllamaTextThenToolCall: a model that writes a sentence and
// then calls a tool (common with qwen3, llama3.x: "Let me check.") —
// Ollama's ResponsesStreamConverter opens the message at outputIndex 0,
// then emitFunctionCallEvents gives the call c.outputIndex+i, the same 0,
// never closes the message (processCompletion skips it once toolCallsSent)
// and buildFinalOutput lists completedItems first: [function_call,
// message]. openai-python's accumulator tolerates it (it appends items
// and the final response is the completed event's).
func TestResponsesCompatOllamaTextThenToolCall(t *testing.T) {
	events, args := tcOllamaTextThenCall()
	// The completed response lists the items in another order than they
	// streamed: it is rewritten to the order judged.
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Events: events})
	p := newResponsesProxy(t, up.URL, m, Tenant{Policy: safePolicy(m)})
	_, body := postResponses(t, p.URL, respRequest("Hello there.", true))
	got := readResponsesStream(t, body)
	r, _ := got.Last.Data["response"].(map[string]any)
	out, _ := r["output"].([]any)
	if got.Last.Data["type"] != "response.completed" || got.Text != "Let me check." || got.Args != args || len(out) != 2 {
		t.Fatalf("client read %q %q, last event %v", got.Text, got.Args, got.Last.Data)
	}
	first, _ := out[0].(map[string]any)
	second, _ := out[1].(map[string]any)
	if first["type"] != "message" || outputText(t, r) != "Let me check." || second["arguments"] != args || first["status"] != "completed" {
		t.Errorf("final output %v", out)
	}
}

// ---- llama.cpp ----

// TestResponsesCompatLlamaCppNoIndexes: llama-server's /v1/responses stream
// (tools/server/server-task.cpp, server_task_result_cmpl_partial::
// to_json_oaicompat_resp and ..._final::to_json_oaicompat_resp_stream; as
// vendored in e.g. Telosnex/fllama macos/llama.cpp/tools/server) names
// its events but gives them no output_index, content_index or
// sequence_number: output_item.added carries only the item, deltas only
// item_id.
func TestResponsesCompatLlamaCppNoIndexes(t *testing.T) {
	mid := "msg_Qm3x"
	out := [][]byte{
		tcEv("response.created", map[string]any{"response": map[string]any{"id": "resp_Zz1", "object": "response", "status": "in_progress"}}),
		tcEv("response.in_progress", map[string]any{"response": map[string]any{"id": "resp_Zz1", "object": "response", "status": "in_progress"}}),
		tcEv("response.output_item.added", map[string]any{"item": map[string]any{"content": []any{}, "id": mid, "role": "assistant", "status": "in_progress", "type": "message"}}),
		tcEv("response.content_part.added", map[string]any{"item_id": mid, "part": map[string]any{"type": "output_text", "text": ""}}),
		tcEv("response.output_text.delta", map[string]any{"item_id": mid, "delta": "Hello"}),
		tcEv("response.output_text.delta", map[string]any{"item_id": mid, "delta": " there!"}),
		tcEv("response.output_text.done", map[string]any{"item_id": mid, "text": "Hello there!"}),
	}
	part := map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": "Hello there!"}
	item := map[string]any{"type": "message", "status": "completed", "id": mid, "content": []any{part}, "role": "assistant"}
	out = append(out,
		tcEv("response.content_part.done", map[string]any{"item_id": mid, "part": part}),
		tcEv("response.output_item.done", map[string]any{"item": item}),
		tcEv("response.completed", map[string]any{"response": map[string]any{"id": "resp_Zz1", "object": "response", "created_at": 1765000000,
			"status": "completed", "model": "qwen3", "output": []any{item}, "usage": map[string]any{"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}}}),
	)
	tcStreamPasses(t, out)
}

// TestResponsesCompatLlamaCppWhole (works): llama-server's whole answer
// (to_json_oaicompat_resp): a reasoning item with reasoning_text content
// and encrypted_content "", a message, a function call with no id.
func TestResponsesCompatLlamaCppWhole(t *testing.T) {
	tcWholePasses(t, mustJSON(map[string]any{"completed_at": 1765000000, "created_at": 1765000000, "id": "resp_Zz1", "model": "qwen3", "object": "response",
		"output": []any{
			map[string]any{"id": "rs_a", "summary": []any{}, "type": "reasoning", "content": []any{map[string]any{"text": "Think.", "type": "reasoning_text"}}, "encrypted_content": "", "status": "completed"},
			map[string]any{"content": []any{map[string]any{"type": "output_text", "annotations": []any{}, "logprobs": []any{}, "text": "Calling."}}, "id": "msg_b", "role": "assistant", "status": "completed", "type": "message"},
			map[string]any{"type": "function_call", "status": "completed", "arguments": `{"city":"Paris"}`, "call_id": "fc_c", "name": "get_weather"},
		},
		"status": "completed", "usage": map[string]any{"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}}))
}

// ---- OpenRouter ----

// TestResponsesCompatOpenRouterReasoningSignature: OpenRouter's Responses API
// (OpenResponses format) extends reasoning items with "signature" (e.g.
// Anthropic's thinking signature) and "format" ("anthropic-claude-v1",
// "openai-responses-v1", "google-gemini-v1", "unknown"): openrouter.ai/docs
// agent-sdk models OpenResponsesReasoning / OutputReasoningItem "Reasoning
// output item with signature and format extensions". Any Claude or Gemini
// thinking answer carries them; the whole answer shows it most simply.
func TestResponsesCompatOpenRouterReasoningSignature(t *testing.T) {
	tcWholePasses(t, mustJSON(map[string]any{"id": "gen-1761054763-a10nm1", "object": "response", "created_at": 1761054763, "model": "anthropic/claude-sonnet-4.5",
		"status": "completed", "error": nil, "incomplete_details": nil,
		"output": []any{
			map[string]any{"type": "reasoning", "id": "rs_tmp_1", "summary": []any{map[string]any{"type": "summary_text", "text": "The user greets me."}},
				"format": "anthropic-claude-v1", "signature": "EvcBCkgIChABGAIqQKkSDbRuVEQUk9qN1odC098l9SEj"},
			map[string]any{"type": "message", "id": "msg_tmp_2", "status": "completed", "role": "assistant",
				"content": []any{map[string]any{"type": "output_text", "text": "Hello!", "annotations": []any{}}}},
		},
		"usage": map[string]any{"input_tokens": 9, "output_tokens": 20, "total_tokens": 29}}))
}

// ---- LiteLLM proxy ----

// TestResponsesCompatLiteLLMSummaryDeltaNoIndex: LiteLLM's /v1/responses bridge
// for chat-completions providers (Anthropic, Bedrock, Gemini, DeepSeek...
// litellm/responses/litellm_completion_transformation/streaming_iterator.py,
// _process_chat_completion_chunk) streams reasoning as
// ReasoningSummaryTextDeltaEvent(type, item_id, output_index, delta) — the
// type has no summary_index (litellm/types/llms/openai.py) — and sends no
// reasoning_summary_part.added; its done events do carry summary_index 0.
func TestResponsesCompatLiteLLMSummaryDeltaNoIndex(t *testing.T) {
	tcStreamPasses(t, tcLiteLLMReasoning(false))
}

// tcLiteLLMReasoning is the bridge's reasoning-then-text stream
// (_ensure_output_item_for_chunk, _queue_reasoning_done_events with
// summary_index 0, then the message); withIndex adds summary_index to the
// deltas (the control).
func tcLiteLLMReasoning(withIndex bool) [][]byte {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_9b2f", "in_progress", []any{}, "reasoning", map[string]any{"effort": nil, "summary": nil}, "store", true)})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_9b2f", "in_progress", []any{}, "reasoning", map[string]any{"effort": nil, "summary": nil}, "store", true)})
	rs, think := "rs_5c1e", "The user greets me."
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": rs, "type": "reasoning", "status": "in_progress", "summary": []any{}}})
	delta := map[string]any{"item_id": rs, "output_index": 0, "delta": think}
	if withIndex {
		delta["summary_index"] = 0
	}
	s.ev("response.reasoning_summary_text.delta", delta)
	s.ev("response.reasoning_summary_text.done", map[string]any{"item_id": rs, "output_index": 0, "summary_index": 0, "text": think})
	spart := map[string]any{"type": "summary_text", "text": think}
	s.ev("response.reasoning_summary_part.done", map[string]any{"item_id": rs, "output_index": 0, "summary_index": 0, "part": spart})
	ritem := map[string]any{"id": rs, "type": "reasoning", "summary": []any{spart}}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": ritem})
	mid := "msg_7d2a"
	s.ev("response.output_item.added", map[string]any{"output_index": 1, "item": map[string]any{"id": mid, "type": "message", "role": "assistant", "status": "in_progress", "content": []any{}}})
	s.ev("response.content_part.added", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "delta": "Hello!"})
	s.ev("response.output_text.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "text": "Hello!"})
	part := map[string]any{"type": "output_text", "text": "Hello!", "annotations": []any{}, "logprobs": nil}
	s.ev("response.content_part.done", map[string]any{"item_id": mid, "output_index": 1, "content_index": 0, "part": part})
	mitem := map[string]any{"id": mid, "status": "completed", "type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "Hello!", "annotations": []any{}}}}
	s.ev("response.output_item.done", map[string]any{"output_index": 1, "item": mitem})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_9b2f", "completed", []any{ritem, mitem})})
	return s.out
}

// TestResponsesCompatLiteLLMToolCallBeforeMessageDone: the same bridge opens the
// message item (output_index 0) on the first text, streams a following
// tool call as its own item (output_index 1) as its deltas arrive, and
// closes the message only at the end (_finalize_output_step queues the
// tool events, then _queue_message_step_done_events): the message's done
// events come after the call's.
func TestResponsesCompatLiteLLMToolCallBeforeMessageDone(t *testing.T) {
	var s tcSeq
	s.ev("response.created", map[string]any{"response": tcResp("resp_9b2f", "in_progress", []any{})})
	s.ev("response.in_progress", map[string]any{"response": tcResp("resp_9b2f", "in_progress", []any{})})
	mid := "msg_7d2a"
	s.ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": mid, "type": "message", "role": "assistant", "status": "in_progress", "content": []any{}}})
	s.ev("response.content_part.added", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
	s.ev("response.output_text.delta", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "delta": "Let me check."})
	call := "toolu_01A"
	fc := map[string]any{"type": "function_call", "id": call, "call_id": call, "name": "get_weather", "arguments": "", "status": "in_progress"}
	s.ev("response.output_item.added", map[string]any{"output_index": 1, "item": fc})
	args := `{"city":"Paris"}`
	for _, d := range []string{args[:10], args[10:]} {
		s.ev("response.function_call_arguments.delta", map[string]any{"item_id": call, "output_index": 1, "delta": d})
	}
	s.ev("response.function_call_arguments.done", map[string]any{"item_id": call, "output_index": 1, "arguments": args})
	fdone := withMembers(fc, "status", "completed", "arguments", args)
	s.ev("response.output_item.done", map[string]any{"output_index": 1, "item": fdone})
	part := map[string]any{"type": "output_text", "text": "Let me check.", "annotations": []any{}, "logprobs": nil}
	s.ev("response.output_text.done", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "text": "Let me check."})
	s.ev("response.content_part.done", map[string]any{"item_id": mid, "output_index": 0, "content_index": 0, "part": part})
	mdone := map[string]any{"id": mid, "status": "completed", "type": "message", "role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": "Let me check.", "annotations": []any{}}}}
	s.ev("response.output_item.done", map[string]any{"output_index": 0, "item": mdone})
	s.ev("response.completed", map[string]any{"response": tcResp("resp_9b2f", "completed", []any{mdone, fdone})})
	tcStreamPasses(t, s.out)
}

// ---- requests ----

// tcCodexRequest is what Codex CLI sends to /v1/responses
// (openai/codex codex-rs: ResponsesApiRequest — instructions, input of
// ResponseItems, tools, tool_choice "auto", parallel_tool_calls,
// reasoning {effort, summary}, store false, stream true, include
// ["reasoning.encrypted_content"], prompt_cache_key, text {verbosity}).
func tcCodexRequest(tools []any, input ...any) map[string]any {
	base := []any{
		map[string]any{"type": "message", "role": "developer", "content": []any{map[string]any{"type": "input_text", "text": "<permissions instructions>sandbox: workspace-write</permissions instructions>"}}},
		map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "<environment_context>\n  <cwd>/home/u/proj</cwd>\n</environment_context>"}}},
		map[string]any{"type": "message", "role": "user", "content": []any{map[string]any{"type": "input_text", "text": "Fix the typo in README.md"}}},
	}
	return map[string]any{
		"model": "gpt-5-codex", "instructions": "You are Codex, based on GPT-5.", "input": append(base, input...),
		"tools": tools, "tool_choice": "auto", "parallel_tool_calls": false,
		"reasoning": map[string]any{"effort": "medium", "summary": "auto"}, "store": false, "stream": true,
		"include": []any{"reasoning.encrypted_content"}, "prompt_cache_key": "0199a1b2-c3d4", "text": map[string]any{"verbosity": "low"},
	}
}

// tcShellTool is Codex's shell_command function tool.
var tcShellTool = map[string]any{"type": "function", "name": "shell_command", "description": "Runs a shell command and returns its output.",
	"strict": false, "parameters": map[string]any{"type": "object", "properties": map[string]any{
		"command": map[string]any{"type": "string"}, "workdir": map[string]any{"type": "string"}}, "required": []any{"command"}, "additionalProperties": false}}

// TestResponsesCompatCodexFunctionTools (works): Codex's request with function
// tools only (apply_patch as a JSON function, web_search disabled), a
// previous turn's reasoning (encrypted, summary only), a function call and
// its output, passes.
func TestResponsesCompatCodexFunctionTools(t *testing.T) {
	req := tcRequestParses(t, tcCodexRequest([]any{tcShellTool},
		map[string]any{"type": "reasoning", "summary": []any{map[string]any{"type": "summary_text", "text": "**Locating the typo**"}}, "encrypted_content": "gAAAAABo-opaque"},
		map[string]any{"type": "function_call", "name": "shell_command", "arguments": `{"command":"rg -n teh README.md"}`, "call_id": "call_1"},
		map[string]any{"type": "function_call_output", "call_id": "call_1", "output": "3:Fix teh build"},
	))
	if !strings.Contains(req.Trailing, "rg -n teh README.md") || !strings.Contains(req.Trailing, "Fix teh build") {
		t.Errorf("trailing %q", req.Trailing)
	}
}

// TestResponsesCompatCodexCustomApplyPatchTool: Codex declares apply_patch as a
// freeform custom tool for the GPT-5 family and as its fallback
// (codex-rs model info apply_patch_tool_type:
// Some(ApplyPatchToolType::Freeform); create_apply_patch_freeform_tool:
// {"type":"custom","name":"apply_patch","format":{"type":"grammar",
// "syntax":"lark",...}}). Its calls (custom_tool_call.input, streamed as
// response.custom_tool_call_input.delta) are model text like a function's
// arguments. Every Codex request on OpenAI models carries it.
func TestResponsesCompatCodexCustomApplyPatchTool(t *testing.T) {
	applyPatch := map[string]any{"type": "custom", "name": "apply_patch",
		"description": "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
		"format":      map[string]any{"type": "grammar", "syntax": "lark", "definition": "start: begin_patch hunk+ end_patch\nbegin_patch: \"*** Begin Patch\" LF\n"}}
	tcRequestParses(t, tcCodexRequest([]any{tcShellTool, applyPatch}))
}

// TestResponsesCompatCodexHistoryCustomToolCall: once apply_patch ran, Codex
// sends the call and its result back in input (codex-rs protocol
// models.rs ResponseItem::CustomToolCall {call_id, name, input, status},
// CustomToolCallOutput {call_id, output}).
func TestResponsesCompatCodexHistoryCustomToolCall(t *testing.T) {
	tcRequestParses(t, tcCodexRequest([]any{tcShellTool},
		map[string]any{"type": "custom_tool_call", "status": "completed", "call_id": "call_2", "name": "apply_patch",
			"input": "*** Begin Patch\n*** Update File: README.md\n@@\n-Fix teh build\n+Fix the build\n*** End Patch\n"},
		map[string]any{"type": "custom_tool_call_output", "call_id": "call_2", "output": "Success. Updated the following files:\nM README.md\n"},
	))
}

// TestResponsesCompatCodexWebSearchDefault: Codex's default web_search mode
// "cached" adds {"type":"web_search","external_web_access":false} to every
// request (codex core tests: "web_search cached mode should force
// external_web_access=false"); -c web_search="disabled" removes it. A
// built-in tool: the refusal is by design, but it is Codex's default, so
// the error should say how to turn it off.
func TestResponsesCompatCodexWebSearchDefault(t *testing.T) {
	_, err := parseResponsesRequest(mustJSON(tcCodexRequest([]any{tcShellTool, map[string]any{"type": "web_search", "external_web_access": false}})))
	if err == nil || !strings.Contains(err.Error(), `-c web_search="disabled"`) {
		t.Errorf("web_search: %v, want a refusal that says how to turn it off in Codex", err)
	}
}

// TestResponsesCompatAgentsSDKSecondTurn (works): the OpenAI Agents SDK's next
// request after a tool call: the previous output items as the server sent
// them (model_dump(exclude_unset=True): ids, status, annotations, logprobs,
// phase, encrypted_content), a function_call_output whose output is a list
// of input_text/input_image parts, strict tools, json_schema output,
// reasoning, truncation, metadata, store false, stream_options.
func TestResponsesCompatAgentsSDKSecondTurn(t *testing.T) {
	body := map[string]any{
		"model": "gpt-5", "instructions": "You are a weather agent.", "stream": true, "store": false,
		"include": []any{"reasoning.encrypted_content"}, "tool_choice": "auto", "parallel_tool_calls": true,
		"truncation": "auto", "metadata": map[string]any{"run": "r1"}, "top_logprobs": nil, "service_tier": "auto",
		"stream_options": map[string]any{"include_obfuscation": false}, "reasoning": map[string]any{"effort": "low", "summary": "auto"},
		"text": map[string]any{"format": map[string]any{"type": "json_schema", "name": "Weather", "strict": true,
			"schema": map[string]any{"type": "object", "properties": map[string]any{"summary": map[string]any{"type": "string"}}, "required": []any{"summary"}, "additionalProperties": false}},
			"verbosity": "medium"},
		"tools": []any{map[string]any{"type": "function", "name": "get_weather", "description": "Weather now", "strict": true,
			"parameters": map[string]any{"type": "object", "properties": map[string]any{"city": map[string]any{"type": "string"}}, "required": []any{"city"}, "additionalProperties": false}}},
		"input": []any{
			map[string]any{"role": "user", "content": "Weather in Paris?"},
			map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{map[string]any{"type": "summary_text", "text": "Call the tool."}}, "encrypted_content": "gAAAA"},
			map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "phase": "commentary",
				"content": []any{map[string]any{"type": "output_text", "text": "Checking.", "annotations": []any{}, "logprobs": []any{}}}},
			map[string]any{"id": "fc_1", "type": "function_call", "status": "completed", "call_id": "call_1", "name": "get_weather", "arguments": `{"city":"Paris"}`},
			map[string]any{"type": "function_call_output", "call_id": "call_1", "output": []any{
				map[string]any{"type": "input_text", "text": "Sunny, 20C"}, map[string]any{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}}},
		},
	}
	req := tcRequestParses(t, body)
	if !strings.Contains(req.Trailing, "Sunny, 20C") {
		t.Errorf("trailing %q", req.Trailing)
	}
}

// TestResponsesCompatOpenAIFunctionCallCaller (less certain: whether OpenAI
// sends it on ordinary calls is not documented): since openai-python
// 2.45.0 (gpt-5.6 updates, programmatic tool calling) a function_call item
// may say who made it: caller {"type":"direct"} or {"type":"program",
// "caller_id":...} (src/openai/types/responses/response_function_tool_call.py
// Caller; function tools gained allowed_callers ["direct","programmatic"]).
// The item shape takes it (it holds no text of the answer). Shown on a
// whole answer.
func TestResponsesCompatOpenAIFunctionCallCaller(t *testing.T) {
	tcWholePasses(t, mustJSON(tcResp("resp_68c2", "completed", []any{
		map[string]any{"id": "fc_68c2", "type": "function_call", "status": "completed", "arguments": `{"city":"Paris"}`,
			"call_id": "call_Q", "name": "get_weather", "caller": map[string]any{"type": "direct"}},
	})))
}

// TestResponsesCompatVLLMWhole (works): vLLM's non-streamed answer
// (JSONResponse(content=ResponsesResponse.model_dump()); items from
// extract_response_outputs: reasoning with reasoning_text content and
// status None, message with logprobs None, function call).
func TestResponsesCompatVLLMWhole(t *testing.T) {
	tcWholePasses(t, mustJSON(tcResp("resp_abc", "completed", []any{
		map[string]any{"id": "rs_1", "type": "reasoning", "summary": []any{}, "status": nil, "encrypted_content": nil,
			"content": []any{map[string]any{"text": "Greet back.", "type": "reasoning_text"}}},
		map[string]any{"id": "msg_2", "type": "message", "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": "Hi!", "annotations": []any{}, "logprobs": nil}}},
		map[string]any{"id": "fc_3", "type": "function_call", "status": "completed", "call_id": "chatcmpl-tool-9", "name": "get_weather",
			"arguments": `{"city":"Paris"}`, "caller": nil, "namespace": nil},
	}, "input_messages", nil, "output_messages", nil, "kv_transfer_params", nil)))
}

// ---- controls ----

// TestResponsesCompatControls: the streams above with the difference each
// names undone (OpenAI's own event names, indexes) pass too.
func TestResponsesCompatControls(t *testing.T) {
	replace := func(evs [][]byte, pairs ...string) [][]byte {
		out := make([][]byte, len(evs))
		for i, e := range evs {
			for j := 0; j < len(pairs); j += 2 {
				e = bytes.ReplaceAll(e, []byte(pairs[j]), []byte(pairs[j+1]))
			}
			out[i] = e
		}
		return out
	}
	t.Run("vLLM reasoning_part as content_part", func(t *testing.T) {
		tcStreamPasses(t, replace(tcVLLMReasoningStream([2]string{}), "response.reasoning_part.", "response.content_part."))
	})
	t.Run("LiteLLM summary delta with summary_index", func(t *testing.T) {
		tcStreamPasses(t, tcLiteLLMReasoning(true))
	})
}
