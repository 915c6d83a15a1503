package extproc_test

import (
	"strings"
	"testing"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/streamguard/streamguard/internal/proxy"
)

// Envoy applies a mode_override only when neither configured body mode is
// FULL_DUPLEX_STREAMED (and bodies wait for the header response); it drops
// it silently otherwise. protocol_config gives the service both modes.

// Request body NONE, response FULL_DUPLEX_STREAMED: the override asking
// for the request body would be dropped and the prompt go upstream
// unjudged, so the request is refused at its headers.
func TestDuplexResponseModeRefusesUnjudgedPrompt(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	d := fx.env.drive()
	r := d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_FULL_DUPLEX_STREAMED))
	if im := r.GetImmediateResponse(); im == nil || im.GetStatus().GetCode() != 500 || !strings.Contains(string(im.GetBody()), "request_body_mode") {
		t.Errorf("request headers answered with %v; want a refusal naming request_body_mode", r)
	}
	d.close()
}

// Request FULL_DUPLEX_STREAMED, response STREAMED, a whole (non-streamed)
// answer: the override to BUFFERED is dropped, the headers go to the client
// with 200, and the body comes STREAMED, where Envoy applies no header
// mutation. A flagged answer is cut as a completion (finish_reason
// content_filter) in the body, with no :status mutation.
func TestDuplexRequestModeCutsWholeAnswerInBody(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	up := wholeBody(testResponse)
	prompt := chatBody(fc.prompt, false)
	flagT := proxy.Tenant{Name: "flag", Policy: fc.policy}
	compT := flagT
	compT.Refusal = proxy.RefusalCompletion
	_, _, wantCut := viaProxy(t, m, compT, prompt, "application/json", up)

	fx := newFixture(t, keys{"flag": &flagT}, defaultFilter, 0)
	d := fx.env.drive()
	if r := d.do(withConfig(reqHeaders("flag"), filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_STREAMED)); r.GetRequestHeaders() == nil {
		t.Fatalf("request headers answered with %v", r)
	}
	if r := d.do(reqBody(prompt)); r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse() == nil {
		t.Fatalf("FULL_DUPLEX_STREAMED request body answered with %v", r)
	}
	if r := d.do(respHeaders("application/json")); r.GetResponseHeaders() == nil {
		t.Fatalf("response headers answered with %v", r)
	}
	r := d.do(respBody(up, true))
	c := r.GetResponseBody().GetResponse()
	if c == nil {
		t.Fatalf("response body answered with %v", r)
	}
	for _, h := range c.GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == ":status" {
			t.Errorf("a :status %s mutation in a STREAMED body answer: Envoy ignores it, the client has 200", h.GetHeader().GetRawValue())
		}
	}
	if got := c.GetBodyMutation().GetBody(); normalize(got) != normalize(wantCut) || !strings.Contains(string(got), `"finish_reason":"content_filter"`) {
		t.Errorf("the client gets\n%s\nwant the cut completion\n%s", got, wantCut)
	}
	d.close()
}

// A BUFFERED body that ends with HTTP trailers reaches the processor as
// one message without end_of_stream (Envoy's Filter::onTrailers), and with
// trailer mode SKIP nothing follows it: the request body is judged whole
// (Envoy checks Content-Length against a cleared body, and an empty body
// would reach the upstream).
func TestBufferedRequestBodyBeforeTrailers(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	d := fx.env.drive()
	if r := d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED)); r.GetRequestHeaders() == nil {
		t.Fatalf("request headers answered with %v", r)
	}
	body := chatBody("How do I bake bread?", true)
	r := d.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: body, EndOfStream: false}}})
	if r.GetRequestBody() == nil || r.GetRequestBody().GetResponse().GetBodyMutation() != nil {
		t.Fatalf("the whole BUFFERED body (trailers follow) answered with %v; want it judged and passed as it is", r)
	}
	d.close()
}

// A whole answer asked for BUFFERED that comes in one piece without
// end_of_stream: either the override held and trailers follow (HTTP/2
// upstreams), or it did not and STREAMED goes on. The answer is judged
// then, in the form that holds either way (no :status change, its length
// given), and any data after it is dropped, not passed unjudged.
func TestWholeAnswerBeforeTrailers(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	d := fx.env.drive()
	d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED))
	if r := d.do(reqBody(chatBody("How do I bake bread?", false))); r.GetRequestBody() == nil {
		t.Fatalf("request body answered with %v", r)
	}
	r := d.do(respHeaders("application/json"))
	if r.GetModeOverride().GetResponseBodyMode() != filterv3.ProcessingMode_BUFFERED {
		t.Fatalf("response headers answered with %v, want an override to BUFFERED", r)
	}
	up := wholeBody("Bread is old.")
	r = d.do(respBody(up, false))
	c := r.GetResponseBody().GetResponse()
	if r.GetResponseBody() == nil || c.GetBodyMutation() != nil {
		t.Fatalf("the whole answer (trailers follow) answered with %v; want it judged and released as it is", r)
	}
	for _, h := range c.GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == ":status" {
			t.Errorf("a :status mutation where the status may have gone: %v", h)
		}
	}
	r = d.do(respBody([]byte(`{"more": "text the guard never judged"}`), true))
	if bm := r.GetResponseBody().GetResponse().GetBodyMutation(); !bm.GetClearBody() {
		t.Errorf("data after the judged answer answered with %v; want it dropped", r)
	}
	d.close()
}

// An override taken for the request body says nothing of one for the
// response (Envoy's allowed_override_modes may list one and not the
// other): an answer asked for BUFFERED that comes in pieces is judged as
// it streams, its first piece not taken for the whole.
func TestResponseOverrideNotTakenStreams(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	d := fx.env.drive()
	r := d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_STREAMED))
	if r.GetModeOverride().GetRequestBodyMode() != filterv3.ProcessingMode_BUFFERED {
		t.Fatalf("request headers answered with %v; want an override asking for the body", r)
	}
	if r := d.do(reqBody(chatBody("How do I bake bread?", false))); r.GetRequestBody() == nil {
		t.Fatalf("request body answered with %v", r)
	}
	if r := d.do(respHeaders("application/json")); r.GetModeOverride().GetResponseBodyMode() != filterv3.ProcessingMode_BUFFERED {
		t.Fatalf("response headers answered with %v; want an override to BUFFERED", r)
	}
	up := wholeBody(testResponse)
	half := len(up) / 2
	first := d.do(respBody(up[:half], false))
	if !first.GetResponseBody().GetResponse().GetBodyMutation().GetClearBody() {
		t.Errorf("the first piece answered with %v; want it held", first)
	}
	second := d.do(respBody(up[half:], true))
	if got := second.GetResponseBody().GetResponse().GetBodyMutation().GetBody(); normalize(got) != normalize(up) {
		t.Errorf("the answer's end released\n%s\nwant the whole answer, judged\n%s", got, up)
	}
	d.close()
}
