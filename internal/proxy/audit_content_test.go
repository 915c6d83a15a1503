package proxy

import (
	"strings"
	"testing"
	"time"
)

// TestResponseFailedContentNotAudited: a Responses API upstream that
// streams some text and then fails sends response.failed, whose response
// object carries the request's instructions and the output so far, as
// OpenAI's does, text the proxy held back included. The audit record holds
// the error's type and code and its size, never that text.
func TestResponseFailedContentNotAudited(t *testing.T) {
	m := tinyModel(t)
	const instr = "SYSTEM-PROMPT-SECRET: you are the payroll bot of ACME"
	const heldText = "HELD-BACK-ANSWER-TEXT never released"
	evs := respSpec{Content: []string{"Hello ", "there"}, Hang: true}.events()
	seq := len(evs)
	failed := map[string]any{"type": "response.failed", "sequence_number": seq, "response": map[string]any{
		"id": "resp_fake42", "object": "response", "created_at": 1700000000, "status": "failed", "model": "fake-llm",
		"instructions": instr,
		"output": []any{map[string]any{"id": "msg_1", "type": "message", "status": "incomplete", "role": "assistant",
			"content": []any{map[string]any{"type": "output_text", "text": "Hello there " + heldText, "annotations": []any{}}}}},
		"error": map[string]any{"code": "server_error", "message": "The model failed to generate a response."},
		"usage": nil, "tools": []any{}}}
	evs = append(evs, namedEvent("response.failed", failed))
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newTestProxyFor(t, NewResponsesHandler, up.URL, Direct(m), Tenant{Name: "t1", Policy: safePolicy(m)}, nil)
	req := respRequest("Hello", true)
	req["instructions"] = instr
	postResponses(t, p.URL, req)
	rec := p.lastRecord(t)
	if rec["event"] != EventUpstreamError || rec["error_type"] != "response.failed" || rec["error_code"] != "server_error" {
		t.Errorf("audit record %v, want upstream_error with the event's type and the response's error code", rec)
	}
	all := ""
	for _, r := range p.audit.Records(t) {
		for _, v := range r {
			if s, ok := v.(string); ok {
				all += s + "\n"
			}
		}
	}
	if strings.Contains(all, instr) || strings.Contains(all, heldText) {
		t.Errorf("without log_content the audit log holds the prompt's instructions and/or the response text (event %v)", rec["event"])
	}
}

// TestChatStreamErrorNotAuditedVerbatim: an upstream that reports an error
// inside a chat-completions stream (gateways quote the failing request's
// messages in theirs) has its type and code audited, not its message.
func TestChatStreamErrorNotAuditedVerbatim(t *testing.T) {
	m := tinyModel(t)
	const prompt = "PROMPT-SECRET my card number is 4111 1111 1111 1111"
	errEv := []byte(`data: {"error":{"message":"litellm.APIError: upstream failed for messages=[{'role': 'user', 'content': '` + prompt + `'}]","type":"api_error","code":500}}` + "\n\n")
	evs := [][]byte{
		append(append([]byte("data: "), chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil)...), "\n\n"...),
		append(append([]byte("data: "), chunkJSON(map[string]any{"content": "Hi"}, nil)...), "\n\n"...),
		errEv,
	}
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Name: "t1", Policy: safePolicy(m)}, nil)
	rawPost(t, p.URL, prompt, true, nil)
	rec := p.lastRecord(t)
	for k, v := range rec {
		if s, _ := v.(string); strings.Contains(s, "PROMPT-SECRET") {
			t.Errorf("the audit record's %s quotes the upstream's error message: %q", k, s)
		}
	}
	if rec["error_type"] != "api_error" || rec["error_code"] != "500" || rec["error_bytes"] == nil {
		t.Errorf("audit record %v, want the error's type, code and size", rec)
	}
}

// TestFailOpenMidStreamUnjudgedRecorded: a fail-open tenant whose guard
// fails mid-stream gets the rest of the answer unjudged; when the upstream
// then breaks off, the request's audit record still says that text went
// out unjudged, and why.
func TestFailOpenMidStreamUnjudgedRecorded(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hello ", "there ", "UNJUDGED-1 ", "UNJUDGED-2 ", "more ", "text"}, DropAfter: 6, Pace: 100 * time.Millisecond})
	p := newTestProxy(t, up.URL, failing{Moderator: Direct(m), n: 1}, Tenant{Name: "t1", Policy: safePolicy(m), FailOpen: true, Mode: HoldBack}, nil)
	_, body := rawPost(t, p.URL, "Hello", true, nil)
	rec := p.lastRecord(t)
	if !strings.Contains(string(body), "UNJUDGED-2") {
		t.Fatalf("setup: the text after the guard's failure did not reach the client: %s", body)
	}
	if rec["event"] != EventUpstreamError || rec["unjudged"] != true || rec["reason"] == nil {
		t.Errorf("audit record %v, want upstream_error with unjudged true and the reason", rec)
	}
}

// TestUpstreamBadLineNotQuotedInAudit: a gateway that writes its error
// into the event stream as a bare JSON line quoting the request has the
// line refused; the client's error message quotes its start, the audit
// record only the error's code.
func TestUpstreamBadLineNotQuotedInAudit(t *testing.T) {
	m := tinyModel(t)
	const prompt = "PROMPT-SECRET my card number is 4111 1111 1111 1111"
	evs := [][]byte{
		append(append([]byte("data: "), chunkJSON(map[string]any{"role": "assistant", "content": ""}, nil)...), "\n\n"...),
		append(append([]byte("data: "), chunkJSON(map[string]any{"content": "Hi"}, nil)...), "\n\n"...),
		[]byte(`{"error":"` + prompt + `: upstream failed"}` + "\n\n"),
	}
	up := newFakeUpstream(t, upstreamSpec{Events: evs})
	p := newTestProxy(t, up.URL, Direct(m), Tenant{Name: "t1", Policy: safePolicy(m)}, nil)
	rawPost(t, p.URL, prompt, true, nil)
	rec := p.lastRecord(t)
	if rec["event"] != EventUpstreamError || rec["code"] != "upstream_bad_response" {
		t.Fatalf("setup: audit record %v, want upstream_error", rec)
	}
	for k, v := range rec {
		if s, _ := v.(string); strings.Contains(s, "PROMPT-SECRET") {
			t.Errorf("the audit record's %q holds the upstream's text (the quoted prompt): %q", k, s)
		}
	}
}

// TestWholeFailOpenMarkedUnjudged: a fail-open tenant's whole answer that
// goes out unjudged is recorded with unjudged true and the reason, as a
// streamed one is.
func TestWholeFailOpenMarkedUnjudged(t *testing.T) {
	m := tinyModel(t)
	up := newFakeUpstream(t, upstreamSpec{Content: []string{"Hello ", "there, ", "UNJUDGED-ANSWER"}})
	p := newTestProxy(t, up.URL, failing{Moderator: Direct(m), n: 0}, Tenant{Name: "t1", Policy: safePolicy(m), FailOpen: true, Mode: HoldBack}, nil)
	resp, body := rawPost(t, p.URL, "Hello", false, nil)
	rec := p.lastRecord(t)
	if !strings.Contains(string(body), "UNJUDGED-ANSWER") || resp.Header.Get("X-Streamguard-Unjudged") != "1" {
		t.Fatalf("setup: the answer did not go out unjudged: %d %s %v", resp.StatusCode, body, rec)
	}
	if rec["event"] != EventUnjudged || rec["reason"] == nil {
		t.Fatalf("setup: audit record %v, want event unjudged with a reason", rec)
	}
	if rec["unjudged"] != true {
		t.Errorf("whole answer sent unjudged: audit record %v, want unjudged true (as a streamed one has)", rec)
	}
}
