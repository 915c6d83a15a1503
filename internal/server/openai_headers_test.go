package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// Every answer carries X-Request-Id, which the OpenAI SDKs show as the
// response's or the error's request id (openai-python's _request_id and
// APIStatusError.request_id, openai-node's requestID); a moderation's id
// holds it, as do its inputs' audit records.
func TestRequestIDHeader(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil), ModelName: "sg-tiny"})
	seen := map[string]bool{}
	for _, c := range []struct{ method, path, key, body string }{
		{"POST", "/v1/moderations", "key-a", `{"input":"hello"}`},
		{"GET", "/v1/models", "key-a", ""},
		{"POST", "/v1/moderations", "key-a", `{"input":[]}`},   // 400
		{"POST", "/v1/moderations", "wrong", `{"input":"hi"}`}, // 401
	} {
		var body any
		if c.body != "" {
			body = c.body
		}
		var out struct {
			ID string `json:"id"`
		}
		code, hdr := h.do(c.method, c.path, c.key, body, &out)
		id := hdr.Get("X-Request-Id")
		if len(id) != 24 || seen[id] {
			t.Errorf("%s %s (status %d): X-Request-Id %q; want a new 24-digit id", c.method, c.path, code, id)
		}
		seen[id] = true
		if code == 200 && c.path == "/v1/moderations" && out.ID != "modr-"+id {
			t.Errorf("moderation id %q with X-Request-Id %q; want modr-%s", out.ID, id, id)
		}
	}
}

// The proxy tells the OpenAI SDKs not to retry an error it gives after
// the upstream answered (they retry 408, 409, 429 and 5xx unless
// X-Should-Retry says false): a retry would have the upstream generate,
// and bill, the same answer again, for an error that comes again. Its
// X-Request-Id is its own request id; an answer relayed keeps the
// upstream's.
func TestProxyNoRetryAfterUpstreamAnswered(t *testing.T) {
	m := testModel(t)
	var calls atomic.Int32
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		if r.Header.Get("X-Test-Upstream-Id") != "" {
			w.Header().Set("X-Request-Id", "req_upstream")
			fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}`)
			return
		}
		// A message member the proxy does not know: refused (502
		// upstream_bad_response) every time.
		fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi","vendor_note":"some text"},"finish_reason":"stop"}]}`)
	}))
	t.Cleanup(up.Close)
	h := newHarness(t, Options{Model: m, Config: flagAndPassTenants(m, nil)})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	post := func(body string, upstreamID bool) *http.Response {
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer key-b")
		if upstreamID {
			req.Header.Set("X-Test-Upstream-Id", "1")
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Error apiErrorBody `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		return resp
	}
	resp := post(`{"model":"m","messages":[{"role":"user","content":"Say hello."}]}`, false)
	if resp.StatusCode != 502 || resp.Header.Get("X-Should-Retry") != "false" || calls.Load() != 1 {
		t.Errorf("an answer the proxy cannot moderate: status %d, X-Should-Retry %q; want 502 and false", resp.StatusCode, resp.Header.Get("X-Should-Retry"))
	}
	if id := resp.Header.Get("X-Request-Id"); id == "" || id != resp.Header.Get("X-Streamguard-Request-Id") {
		t.Errorf("X-Request-Id %q, X-Streamguard-Request-Id %q: want the proxy's id in both", id, resp.Header.Get("X-Streamguard-Request-Id"))
	}
	if resp := post(`{"model":"m","messages":[{"role":"user","content":"Say hello."}]}`, true); resp.StatusCode != 200 || len(resp.Header.Values("X-Request-Id")) != 1 || resp.Header.Get("X-Request-Id") != "req_upstream" {
		t.Errorf("a relayed answer: status %d, X-Request-Id %q; want the upstream's req_upstream alone", resp.StatusCode, resp.Header.Values("X-Request-Id"))
	}
	// Refused before the upstream is called: retrying is the SDKs' call.
	calls.Store(0)
	resp = post(`{"model":"m","messages":[]}`, false)
	if resp.StatusCode != 400 || resp.Header.Get("X-Should-Retry") != "" || calls.Load() != 0 {
		t.Errorf("a request refused before the upstream: status %d, X-Should-Retry %q, %d upstream calls", resp.StatusCode, resp.Header.Get("X-Should-Retry"), calls.Load())
	}
}
