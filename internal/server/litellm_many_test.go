package server

import (
	"encoding/json"
	"runtime"
	"strings"
	"testing"
)

// manyTextsRequest is a LiteLLM request of the messages msgs (JSON
// objects) and n texts "x".
func manyTextsRequest(t *testing.T, msgs []string, n int) (*litellmRequest, int) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`{"input_type":"request","structured_messages":[` + strings.Join(msgs, ",") + `],"texts":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"x"`)
	}
	b.WriteString(`]}`)
	var req litellmRequest
	if err := json.Unmarshal([]byte(b.String()), &req); err != nil {
		t.Fatal(err)
	}
	return &req, b.Len()
}

// TestLiteLLMManyTextsLinear: the texts LiteLLM sends that no message
// holds are joined once (each was appended to the text so far, copying it:
// 250,000 one-letter texts in a 1 MB body took 5.8 s and gigabytes before
// anything was judged). The bound, 64 bytes allocated per byte of the
// body, is far above the linear cost and far below the quadratic one.
func TestLiteLLMManyTextsLinear(t *testing.T) {
	req, size := manyTextsRequest(t, []string{`{"role":"user","content":"hi"}`}, 250000)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	convs, _, _, err := litellmConversations(req)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 || strings.Count(convs[1][len(convs[1])-1].Content, "x") != 250000 {
		t.Fatalf("%d conversations; want the prompt and the texts after it", len(convs))
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(64*size) {
		t.Errorf("%d texts (%d-byte body) allocated %d MB", 250000, size, alloc>>20)
	}
}

// TestLiteLLMHeldTextsExact: a text is left to its message only when it is
// exactly one of the messages' strings (a content string, a part's text:
// what LiteLLM extracts); any other text, a piece of a message included,
// is judged after the last user turn. (Every text was searched for in
// every message: texts × messages substring searches, 13 s for one request
// of 720 KB.)
func TestLiteLLMHeldTextsExact(t *testing.T) {
	req := &litellmRequest{InputType: "request", Texts: []string{"hello there", "part two", "hello", " "}}
	for _, m := range []string{`{"role":"user","content":"hello there"}`, `{"role":"user","content":[{"type":"text","text":"part one"},{"type":"text","text":"part two"}]}`} {
		req.StructuredMessages = append(req.StructuredMessages, json.RawMessage(m))
	}
	convs, _, _, err := litellmConversations(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 {
		t.Fatalf("%d conversations, want the prompt and the text after it", len(convs))
	}
	if after := convs[1][len(convs[1])-1].Content; after != "hello" {
		t.Errorf("judged after the last user turn: %q, want %q (the held texts left to their messages)", after, "hello")
	}
}
