package extproc_test

// Paths an upstream routes otherwise than the guard reads them, and stored
// answers.

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// TestRouteControlCharacters: uvicorn percent-decodes the path and
// Starlette (vLLM, LiteLLM) matches routes with "^/v1/responses$", whose
// "$" also matches before a final "\n": POST /v1/responses%0A (and
// /v1/chat/completions%0A) reaches the upstream's Responses (chat) route,
// while routeOf reads "/v1/responses\n" as no API and passes the request
// and its answer untouched, unjudged.
func TestRouteControlCharacters(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, defaultFilter, 0)
	upBody := responsesSSE("Unjudged generated text.", 5)
	reqBody, _ := json.Marshal(map[string]any{"model": "fake-llm", "stream": true, "input": "flag me"})
	for _, p := range []string{"/v1/responses%0A", "/v1/responses%0a", "/v1/chat/completions%0A"} {
		t.Run(p, func(t *testing.T) {
			fx.env.t = t
			o := fx.env.exchange(context.Background(), request{path: p, header: map[string]string{"X-Api-Key": "k"}, body: reqBody}, sseReply([][]byte{upBody}))
			if o.immediate == nil && bytes.Equal(o.body, upBody) && bytes.Equal(o.upstreamBody, reqBody) && o.bodyMode == filterv3.ProcessingMode_NONE {
				t.Errorf("%s passed untouched: the request and its answer were never judged", p)
			}
		})
	}
}

// TestStoredAnswersRefused: a Responses request is
// forwarded with store left to the upstream's default (true at OpenAI and
// vLLM), so the upstream keeps the whole answer, the part a cut withheld
// included; GET /v1/responses/{id} (and …/input_items, ?stream=true to
// replay the events) is not a POST, so routeOf passes it untouched and
// the client would read the stored answer unjudged: such a GET is refused.
func TestStoredAnswersRefused(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, defaultFilter, 0)
	stored, _ := json.Marshal(map[string]any{"id": "resp_fake42", "object": "response", "status": "completed", "output": []any{
		map[string]any{"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": "The whole stored answer, flagged run included.", "annotations": []any{}}}}}})
	for _, p := range []string{"/v1/responses/resp_fake42", "/v1/responses/resp_fake42?stream=true"} {
		t.Run(p, func(t *testing.T) {
			fx.env.t = t
			o := fx.env.exchange(context.Background(), request{path: p, header: map[string]string{"X-Api-Key": "k", ":method": "GET"}}, jsonReply([][]byte{stored}))
			if o.immediate == nil && bytes.Equal(o.body, stored) {
				t.Errorf("GET %s passed untouched: the stored answer reached the client unjudged", p)
			}
		})
	}
}

// TestStoredAnswersOtherRoutes: OpenAI returns a stored answer (store:
// true, the part a cut withheld included) from the list of stored chat
// completions (GET /v1/chat/completions) and from the update of one (POST
// /v1/chat/completions/{id}, metadata only: it answers with the whole
// completion): both are refused, as GET …/{id} is.
func TestStoredAnswersOtherRoutes(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, defaultFilter, 0)
	completion := map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": "The whole stored answer, flagged run included."}}}}
	list, _ := json.Marshal(map[string]any{"object": "list", "data": []any{completion}, "has_more": false})
	one, _ := json.Marshal(completion)
	meta, _ := json.Marshal(map[string]any{"metadata": map[string]any{"k": "v"}})
	for _, tc := range []struct {
		method, path string
		body, reply  []byte
	}{
		{"GET", "/v1/chat/completions", nil, list},
		{"GET", "/v1/chat/completions?model=fake-llm", nil, list},
		{"POST", "/v1/chat/completions/chatcmpl-1", meta, one},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			fx.env.t = t
			o := fx.env.exchange(context.Background(), request{path: tc.path, header: map[string]string{"X-Api-Key": "k", ":method": tc.method}, body: tc.body}, jsonReply([][]byte{tc.reply}))
			if o.immediate == nil && bytes.Equal(o.body, tc.reply) {
				t.Errorf("%s %s passed untouched: the stored answer reached the client unjudged", tc.method, tc.path)
			}
		})
	}
}

// TestStoredListBehindEncodedQuery: a percent-encoded "?" or "#" is read
// both ways for every method (the path to an upstream that decodes once,
// the start of a query to one that decodes and parses again): GET
// /v1/chat/completions%3F (or …%23, …%3Fmodel=x) is, to an upstream that
// decodes and parses again, GET /v1/chat/completions, the list of stored
// completions (the part a cut withheld among them): refused as it is when
// spelt plainly (TestStoredAnswersOtherRoutes).
func TestStoredListBehindEncodedQuery(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, defaultFilter, 0)
	completion := map[string]any{"id": "chatcmpl-1", "object": "chat.completion", "model": "fake-llm",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": "The whole stored answer, flagged run included."}}}}
	list, _ := json.Marshal(map[string]any{"object": "list", "data": []any{completion}, "has_more": false})
	for _, p := range []string{"/v1/chat/completions", "/v1/chat/completions%3F", "/v1/chat/completions%3Fmodel=fake-llm", "/v1/chat/completions%23", "/v1/responses%3F"} {
		t.Run(p, func(t *testing.T) {
			fx.env.t = t
			o := fx.env.exchange(context.Background(), request{path: p, header: map[string]string{"X-Api-Key": "k", ":method": "GET"}}, jsonReply([][]byte{list}))
			if o.immediate == nil && bytes.Equal(o.body, list) {
				t.Errorf("GET %s passed untouched: read as a path with a query by an upstream that decodes and parses again, it is the list of stored answers", p)
			}
		})
	}
}
