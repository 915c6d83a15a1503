package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/streamguard/streamguard/internal/extproc"
	"github.com/streamguard/streamguard/internal/proxy"
)

var modes = []struct {
	name string
	f    filter
}{
	{"STREAMED", defaultFilter},
	{"FULL_DUPLEX_STREAMED", filter{reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, allowOverride: true}},
}

// TestSafeStreamPassesThrough: a safe streamed answer reaches the client
// byte for byte, in every response body mode, tenant mode and chunking;
// the request reaches the upstream unchanged, less streamguard's key.
func TestSafeStreamPassesThrough(t *testing.T) {
	m := tinyModel(t)
	upBody := sseBody(testResponse, 3)
	req := request{header: map[string]string{"Authorization": "Bearer key-safe", "Content-Type": "application/json", "X-Upstream-Authorization": "sk-up"},
		body: chatBody("How do I bake bread?", true)}
	for _, tm := range []proxy.Mode{proxy.HoldBack, proxy.PassThrough} {
		for _, md := range modes {
			fx := newFixture(t, keys{"key-safe": {Name: "safe", Policy: safePolicy(m), Mode: tm}}, md.f, 0)
			for name, chunks := range chunkings(upBody) {
				t.Run(tm.String()+"/"+md.name+"/"+name, func(t *testing.T) {
					fx.env.t = t
					o := fx.env.exchange(context.Background(), req, sseReply(chunks))
					if o.immediate != nil {
						t.Fatalf("immediate response: %s", fmtOutcome(o))
					}
					if !bytes.Equal(o.upstreamBody, req.body) {
						t.Errorf("upstream got %q", o.upstreamBody)
					}
					if got := o.upstreamHeader.Get("Authorization"); got != "Bearer sk-up" || o.upstreamHeader.Get("X-Upstream-Authorization") != "" {
						t.Errorf("upstream authorization %q (and X-Upstream-Authorization %q)", got, o.upstreamHeader.Get("X-Upstream-Authorization"))
					}
					if !bytes.Equal(o.body, upBody) {
						t.Fatalf("client got\n%q\nwant\n%q", o.body, upBody)
					}
					if o.header.Get("X-Streamguard-Mode") != tm.String() || o.header.Get("X-Streamguard-Request-Id") == "" {
						t.Errorf("headers %v", o.header)
					}
					if md.f.respMode == filterv3.ProcessingMode_STREAMED && o.answers != len(chunks) {
						t.Errorf("%d answers for %d chunks", o.answers, len(chunks))
					}
					if ev := fx.lastEvent(); ev != proxy.EventAllowed {
						t.Errorf("audit event %q", ev)
					}
				})
			}
		}
	}
}

// TestFlaggedStreamCut: an answer flagged mid-stream is cut with the
// content_filter tail and [DONE]. In hold-back the client gets exactly
// what the HTTP proxy sends (no token of the flagging run), whatever the
// chunking; in pass-through what was relayed, then the tail.
func TestFlaggedStreamCut(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	upBody := sseBody(testResponse, 3)
	reqBody := chatBody(fc.prompt, true)
	hold := proxy.Tenant{Name: "hold", Policy: fc.policy}
	pass := proxy.Tenant{Name: "pass", Policy: fc.policy, Mode: proxy.PassThrough}
	_, _, want := viaProxy(t, m, hold, reqBody, "text/event-stream", upBody)
	if cs := readStream(t, want); cs.content != fc.before || cs.finish != "content_filter" || !cs.done {
		t.Fatalf("the proxy's own cut: %+v, want content %q", cs, fc.before)
	}
	for _, md := range modes {
		fx := newFixture(t, keys{"hold": &hold, "pass": &pass}, md.f, 0)
		for name, chunks := range chunkings(upBody) {
			t.Run(md.name+"/"+name, func(t *testing.T) {
				fx.env.t = t
				o := fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "hold"}, body: reqBody}, sseReply(chunks))
				if normalize(o.body) != normalize(want) {
					t.Fatalf("hold-back: client got\n%s\nthe proxy sends\n%s", o.body, want)
				}
				if ev := fx.lastEvent(); ev != proxy.EventResponseFlagged {
					t.Errorf("audit event %q", ev)
				}

				o = fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "pass"}, body: reqBody}, sseReply(chunks))
				cs := readStream(t, o.body)
				if cs.finish != "content_filter" || !cs.done || !strings.Contains(string(o.body), `"reason":"response_flagged"`) {
					t.Fatalf("pass-through: %+v\n%s", cs, o.body)
				}
				i := bytes.LastIndex(o.body[:len(o.body)-len("data: [DONE]\n\n")], []byte("data: "))
				if relayed := o.body[:i]; !bytes.HasPrefix(upBody, relayed) || !bytes.HasSuffix(relayed, []byte("\n\n")) {
					t.Errorf("pass-through relayed more or less than whole upstream events:\n%s", relayed)
				}
			})
		}
	}
}

// TestSlowChunksHoldBack: chunks that come one at a time (a model
// generating) are answered as they come, with the text judged by then.
func TestSlowChunksHoldBack(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, nil, defaultFilter, 50*time.Millisecond)
	upBody := sseBody(testResponse, 12)
	chunks := split(upBody, 97)
	o := fx.env.exchange(context.Background(), request{body: chatBody("hi", true)}, func(http.Header, []byte) upstreamReply {
		return upstreamReply{header: map[string]string{"Content-Type": "text/event-stream"}, chunks: chunks, pace: 10 * time.Millisecond}
	})
	if !bytes.Equal(o.body, upBody) || o.answers != len(chunks) {
		t.Fatalf("%d answers for %d chunks; body %q", o.answers, len(chunks), o.body)
	}
	// The text went out as it was judged, not all at the end.
	if o.last > len(upBody)/4 {
		t.Errorf("the last answer carries %d of %d bytes", o.last, len(upBody))
	}
	_ = m
}

// TestPromptFlagged: a flagged prompt never reaches the upstream; the
// client gets what the proxy answers: an OpenAI error, or the refusal
// completion, streamed or not as asked.
func TestPromptFlagged(t *testing.T) {
	m := tinyModel(t)
	errT := proxy.Tenant{Name: "err", Policy: promptPolicy(m)}
	compT := proxy.Tenant{Name: "comp", Policy: promptPolicy(m), Refusal: proxy.RefusalCompletion}
	fx := newFixture(t, keys{"err": &errT, "comp": &compT}, defaultFilter, 0)
	for _, c := range []struct {
		key    string
		t      proxy.Tenant
		stream bool
		status int
		ct     string
	}{
		{"err", errT, true, 400, "application/json"},
		{"comp", compT, true, 200, "text/event-stream"},
		{"comp", compT, false, 200, "application/json"},
	} {
		body := chatBody("How do I make a bomb?", c.stream)
		o := fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": c.key}, body: body}, func(http.Header, []byte) upstreamReply {
			t.Fatal("the upstream was called")
			return upstreamReply{}
		})
		status, hdr, want := viaProxy(t, m, c.t, body, "application/json", nil)
		if o.immediate == nil || o.phase != "request_body" || o.status != c.status || o.status != status {
			t.Fatalf("%s stream=%v: %s (proxy: %d)", c.key, c.stream, fmtOutcome(o), status)
		}
		if normalize(o.body) != normalize(want) {
			t.Errorf("%s stream=%v: client got\n%s\nthe proxy answers\n%s", c.key, c.stream, o.body, want)
		}
		if ct := o.header.Get("Content-Type"); ct != c.ct || ct != hdr.Get("Content-Type") {
			t.Errorf("content type %q, proxy %q", ct, hdr.Get("Content-Type"))
		}
		if o.header.Get("X-Streamguard-Request-Id") == "" {
			t.Errorf("no request id: %v", o.header)
		}
		if ev := fx.lastEvent(); ev != proxy.EventPromptFlagged {
			t.Errorf("audit event %q", ev)
		}
	}
}

// TestBadRequests: a request the proxy refuses is refused the same way,
// 400 in OpenAI's shape, and the upstream is not called.
func TestBadRequests(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, nil, defaultFilter, 0)
	for _, body := range []string{
		`{"model":"m","n":2,"messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"hi","Content":"x"}]}`,
		`{"model":"m","messages":[{"role":"user","content":"hi"}]} trailing`,
		`not json`,
	} {
		o := fx.env.exchange(context.Background(), request{body: []byte(body)}, nil)
		_, _, want := viaProxy(t, m, proxy.Tenant{Name: "default", Policy: safePolicy(m)}, []byte(body), "application/json", nil)
		if o.immediate == nil || o.status != 400 || normalize(o.body) != normalize(want) {
			t.Errorf("%s: %s\nproxy: %s", body, fmtOutcome(o), want)
		}
	}
	// No body at all.
	o := fx.env.exchange(context.Background(), request{}, nil)
	if o.immediate == nil || o.phase != "request_headers" || o.status != 400 {
		t.Errorf("no body: %s", fmtOutcome(o))
	}
}

// TestRequestBodyModes: however the request body reaches the service,
// the upstream gets it whole and unchanged once the prompt is judged.
func TestRequestBodyModes(t *testing.T) {
	body := chatBody("Tell me about the history of bread in Europe — ünïcödé and 日本語 too.", true)
	upBody := sseBody("Bread is old.", 4)
	for _, f := range []filter{
		{reqMode: filterv3.ProcessingMode_STREAMED, respMode: filterv3.ProcessingMode_STREAMED},
		{reqMode: filterv3.ProcessingMode_BUFFERED_PARTIAL, respMode: filterv3.ProcessingMode_STREAMED},
		{reqMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, respMode: filterv3.ProcessingMode_FULL_DUPLEX_STREAMED},
		{reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_STREAMED, noProtocolConfig: true},
	} {
		fx := newFixture(t, nil, f, 0)
		o := fx.env.exchange(context.Background(), request{body: body, chunks: split(body, 5)}, sseReply(split(upBody, 11)))
		if o.immediate != nil || !bytes.Equal(o.upstreamBody, body) || !bytes.Equal(o.body, upBody) {
			t.Errorf("%v: %s; upstream got %q", f, fmtOutcome(o), o.upstreamBody)
		}
	}
	// A streamed request body that turns out to be flagged never reaches
	// the upstream, even in part.
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, filter{reqMode: filterv3.ProcessingMode_STREAMED, respMode: filterv3.ProcessingMode_STREAMED}, 0)
	o := fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "k"}, body: body, chunks: split(body, 5)}, nil)
	if o.immediate == nil || o.status != 400 || o.upstreamCalled {
		t.Errorf("flagged streamed request: %s", fmtOutcome(o))
	}
}

// TestWholeResponse: a non-streamed answer is judged whole. With mode
// overrides allowed the service asks for it BUFFERED, so a flagged one
// becomes the proxy's 400; without, the status has gone on and the client
// gets the completion cut with content_filter.
func TestWholeResponse(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	up := wholeBody(testResponse)
	reqBody := chatBody(fc.prompt, false)
	flagT := proxy.Tenant{Name: "flag", Policy: fc.policy}
	status, _, want := viaProxy(t, m, flagT, reqBody, "application/json", up)
	if status != 400 {
		t.Fatalf("proxy: %d %s", status, want)
	}
	fx := newFixture(t, keys{"flag": &flagT, "safe": {Name: "safe", Policy: safePolicy(m)}}, defaultFilter, 0)
	o := fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "flag"}, body: reqBody}, jsonReply(split(up, 50)))
	if o.bodyMode != filterv3.ProcessingMode_BUFFERED || o.status != 400 || normalize(o.body) != normalize(want) {
		t.Fatalf("flagged, BUFFERED by override: %s (mode %v)\nproxy: %s", fmtOutcome(o), o.bodyMode, want)
	}
	if ev := fx.lastEvent(); ev != proxy.EventResponseFlagged {
		t.Errorf("audit event %q", ev)
	}
	o = fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "safe"}, body: reqBody}, jsonReply(split(up, 50)))
	if o.status != 200 || !bytes.Equal(o.body, up) {
		t.Fatalf("safe: %s", fmtOutcome(o))
	}

	// Overrides not allowed: STREAMED chunks, the status already sent.
	noOverride := defaultFilter
	noOverride.allowOverride = false
	fx = newFixture(t, keys{"flag": &flagT}, noOverride, 0)
	o = fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "flag"}, body: reqBody}, jsonReply(split(up, 50)))
	compT := flagT
	compT.Refusal = proxy.RefusalCompletion
	_, _, wantCut := viaProxy(t, m, compT, reqBody, "application/json", up)
	if o.status != 200 || normalize(o.body) != normalize(wantCut) || !strings.Contains(string(o.body), `"finish_reason":"content_filter"`) {
		t.Fatalf("flagged, STREAMED: %s\nwant %s", fmtOutcome(o), wantCut)
	}
}

// TestModeOverrides: what passes is switched to NONE; a filter that would
// not send the request body is asked for it, and where it cannot be, the
// answer is refused rather than sent unjudged.
func TestModeOverrides(t *testing.T) {
	fx := newFixture(t, nil, defaultFilter, 0)
	errBody := []byte(`{"error":{"message":"rate limited","type":"rate_limit_error","param":null,"code":"rate_limit"}}`)
	o := fx.env.exchange(context.Background(), request{body: chatBody("hi", true)}, func(http.Header, []byte) upstreamReply {
		return upstreamReply{status: 429, header: map[string]string{"Content-Type": "application/json"}, chunks: [][]byte{errBody}}
	})
	if o.status != 429 || o.bodyMode != filterv3.ProcessingMode_NONE || !bytes.Equal(o.body, errBody) {
		t.Errorf("upstream error: %s (mode %v)", fmtOutcome(o), o.bodyMode)
	}
	if ev := fx.lastEvent(); ev != proxy.EventUpstreamError {
		t.Errorf("audit event %q", ev)
	}

	none := filter{reqMode: filterv3.ProcessingMode_NONE, respMode: filterv3.ProcessingMode_STREAMED, allowOverride: true}
	fx = newFixture(t, nil, none, 0)
	upBody := sseBody("Fine.", 2)
	o = fx.env.exchange(context.Background(), request{body: chatBody("hi", true)}, sseReply(split(upBody, 9)))
	if o.immediate != nil || !bytes.Equal(o.body, upBody) {
		t.Errorf("request body asked for: %s", fmtOutcome(o))
	}
	none.allowOverride = false
	fx = newFixture(t, nil, none, 0)
	o = fx.env.exchange(context.Background(), request{body: chatBody("hi", true)}, sseReply(split(upBody, 9)))
	if o.immediate == nil || o.phase != "response_headers" || o.status != 500 {
		t.Errorf("request body never judged: %s", fmtOutcome(o))
	}

	// Other requests pass untouched, without a key.
	fx = newFixture(t, keys{}, defaultFilter, 0)
	o = fx.env.exchange(context.Background(), request{path: "/v1/embeddings", body: []byte(`{"input":"x"}`)}, jsonReply([][]byte{[]byte(`{"data":[]}`)}))
	if o.immediate != nil || string(o.body) != `{"data":[]}` || string(o.upstreamBody) != `{"input":"x"}` {
		t.Errorf("another route: %s", fmtOutcome(o))
	}
	// A chat request without a key is refused before its body.
	o = fx.env.exchange(context.Background(), request{body: chatBody("hi", true)}, nil)
	if o.immediate == nil || o.phase != "request_headers" || o.status != 401 {
		t.Errorf("no key: %s", fmtOutcome(o))
	}
}

// TestClientGoesAway: when the gRPC stream is cancelled mid-answer, the
// guard stream is released and every goroutine of the exchange ends.
func TestClientGoesAway(t *testing.T) {
	m := tinyModel(t)
	for _, md := range modes {
		fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, md.f, 0)
		upBody := sseBody(testResponse, 3)
		chunks := split(upBody, 40)
		// A whole exchange first: the gRPC connection's own goroutines are
		// then running.
		fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "k"}, body: chatBody("hi", true)}, sseReply(chunks))
		before := runtime.NumGoroutine()
		ctx, cancel := context.WithCancel(context.Background())
		st, err := fx.env.client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		x := &exchangeRun{e: fx.env, stream: st, first: true, f: md.f}
		x.send(reqHeaders("k"))
		x.recv()
		x.send(reqBody(chatBody("hi", true)))
		x.recv()
		x.send(respHeaders("text/event-stream"))
		x.recv()
		for _, c := range chunks[:5] {
			x.send(respBody(c, false))
		}
		if md.f.respMode == filterv3.ProcessingMode_STREAMED {
			for range 5 {
				x.recv()
			}
		}
		if n := fx.mod.open.Load(); n != 1 {
			t.Errorf("%s: %d streams open mid-answer", md.name, n)
		}
		cancel()
		fx.mod.waitClosed(t)
		if ev := fx.lastEvent(); ev != proxy.EventClientClosed {
			t.Errorf("%s: audit event %q", md.name, ev)
		}
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%s: %d goroutines, %d before:\n%s", md.name, runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestCompressedResponseRefused: the guard judges text, so the client's
// Accept-Encoding does not go upstream, and an answer compressed anyway is
// refused (502 upstream_bad_response) before any of it reaches the client:
// passed on, the client would decompress text nobody judged.
func TestCompressedResponseRefused(t *testing.T) {
	m := tinyModel(t)
	req := request{header: map[string]string{"Authorization": "Bearer key-safe", "Content-Type": "application/json", "Accept-Encoding": "gzip, br"},
		body: chatBody("How do I bake bread?", true)}
	for _, md := range modes {
		fx := newFixture(t, keys{"key-safe": {Name: "safe", Policy: safePolicy(m)}}, md.f, 0)
		for _, ct := range []string{"text/event-stream", "application/json"} {
			t.Run(md.name+"/"+ct, func(t *testing.T) {
				fx.env.t = t
				o := fx.env.exchange(context.Background(), req, func(h http.Header, _ []byte) upstreamReply {
					return upstreamReply{header: map[string]string{"Content-Type": ct, "Content-Encoding": "gzip"}, chunks: [][]byte{[]byte("\x1f\x8b compressed")}}
				})
				if got := o.upstreamHeader.Get("Accept-Encoding"); got != "" {
					t.Errorf("Accept-Encoding %q went upstream", got)
				}
				if o.immediate == nil || o.phase != "response_headers" || o.status != http.StatusBadGateway || !bytes.Contains(o.body, []byte(`"code":"upstream_bad_response"`)) {
					t.Fatalf("want a 502 at the response headers: %s", fmtOutcome(o))
				}
				if ev := fx.lastEvent(); ev != proxy.EventUpstreamError {
					t.Errorf("audit event %q", ev)
				}
			})
		}
	}
}

// TestResponseBodyModeNone: a filter that sends no response body
// (response_body_mode NONE, Envoy's default) lets every answer through
// unjudged unless it honours the override that asks for the body, and
// only a request body asked for the same way shows that it does. Without
// that evidence the answer is refused (500) at its headers, which Envoy
// still holds; with it, the answer is asked for and judged.
func TestResponseBodyModeNone(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	hold := proxy.Tenant{Name: "hold", Policy: fc.policy}
	upBody := sseBody(testResponse, 3)
	req := request{header: map[string]string{"X-Api-Key": "hold"}, body: chatBody(fc.prompt, true)}
	for _, allow := range []bool{false, true} {
		fx := newFixture(t, keys{"hold": &hold}, filter{reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_NONE, allowOverride: allow}, 0)
		o := fx.env.exchange(context.Background(), req, sseReply(split(upBody, 40)))
		if o.immediate == nil || o.phase != "response_headers" || o.status != http.StatusInternalServerError ||
			!bytes.Contains(o.body, []byte("response_body_mode NONE")) || !o.upstreamCalled {
			t.Fatalf("allow_mode_override %v: %s", allow, fmtOutcome(o))
		}
	}
	_, _, want := viaProxy(t, m, hold, req.body, "text/event-stream", upBody)
	fx := newFixture(t, keys{"hold": &hold}, filter{reqMode: filterv3.ProcessingMode_NONE, respMode: filterv3.ProcessingMode_NONE, allowOverride: true}, 0)
	o := fx.env.exchange(context.Background(), req, sseReply(split(upBody, 40)))
	if o.immediate != nil || o.bodyMode != filterv3.ProcessingMode_STREAMED || normalize(o.body) != normalize(want) {
		t.Fatalf("both bodies asked for: %s (mode %v)\nproxy: %s", fmtOutcome(o), o.bodyMode, want)
	}
	if ev := fx.lastEvent(); ev != proxy.EventResponseFlagged {
		t.Errorf("audit event %q", ev)
	}
}

// TestBufferedPartialResponse: in BUFFERED_PARTIAL Envoy sends what fits
// its buffer (end_of_stream false when that is not all) and, once it is
// answered, lets the rest through without sending it here. The service
// keeps that mode (were an override to STREAMED not honoured, the partial
// buffer would pass for a STREAMED chunk), judges an answer that fits
// whole, as the proxy does, and refuses one that does not (502
// upstream_too_large) while its headers are still held.
func TestBufferedPartialResponse(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	hold := proxy.Tenant{Name: "hold", Policy: fc.policy}
	partial := filter{reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_BUFFERED_PARTIAL}
	fx := newFixture(t, keys{"hold": &hold}, partial, 0)
	for _, c := range []struct {
		name, ctype string
		body        []byte
		stream      bool
	}{
		{"stream", "text/event-stream", sseBody(testResponse, 3), true},
		{"whole", "application/json", wholeBody(testResponse), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx.env.t = t
			prompt := chatBody(fc.prompt, c.stream)
			status, _, want := viaProxy(t, m, hold, prompt, c.ctype, c.body)
			o := fx.env.exchange(context.Background(), request{header: map[string]string{"X-Api-Key": "hold"}, body: prompt}, func(http.Header, []byte) upstreamReply {
				return upstreamReply{header: map[string]string{"Content-Type": c.ctype}, chunks: [][]byte{c.body}}
			})
			if o.immediate != nil || o.status != status || normalize(o.body) != normalize(want) {
				t.Fatalf("an answer that fits the buffer: %s\nproxy: %d %s", fmtOutcome(o), status, want)
			}

			d := fx.env.drive()
			d.do(withConfig(reqHeaders("hold"), partial.reqMode, partial.respMode))
			if r := d.do(reqBody(prompt)); r.GetRequestBody() == nil {
				t.Fatalf("prompt answered with %v", r)
			}
			r := d.do(respHeaders(c.ctype))
			if r.GetResponseHeaders() == nil || r.GetModeOverride() != nil {
				t.Fatalf("response headers answered with %v", r)
			}
			refused(t, d.do(respBody(c.body[:64], false)), http.StatusBadGateway, "upstream_too_large")
			d.close()
		})
	}
}

// TestResponseModeUnknown: without protocol_config (Envoy before 1.34) the
// filter's response body mode is a guess. The service pins it with an
// override (STREAMED for an event stream, BUFFERED for a whole answer); a
// whole answer that comes in pieces anyway is refused, since the pieces
// may be BUFFERED_PARTIAL's, the rest of which would pass unjudged.
func TestResponseModeUnknown(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: safePolicy(m)}}, defaultFilter, 0)
	for _, c := range []struct {
		ctype string
		want  filterv3.ProcessingMode_BodySendMode
	}{
		{"text/event-stream", filterv3.ProcessingMode_STREAMED},
		{"application/json", filterv3.ProcessingMode_BUFFERED},
	} {
		d := fx.env.drive()
		d.do(reqHeaders("k"))
		d.do(reqBody(chatBody("hi", c.ctype == "text/event-stream")))
		r := d.do(respHeaders(c.ctype))
		if o := r.GetModeOverride(); r.GetResponseHeaders() == nil || o.GetResponseBodyMode() != c.want || o.GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
			t.Fatalf("%s: response headers answered with %v, want an override to %v", c.ctype, r, c.want)
		}
		if c.want == filterv3.ProcessingMode_BUFFERED {
			refused(t, d.do(respBody(wholeBody("Fine.")[:20], false)), http.StatusInternalServerError, "guard_unavailable")
		} else if r := d.do(respBody(sseBody("Fine.", 2)[:20], false)); r.GetResponseBody() == nil {
			t.Errorf("a streamed chunk answered with %v", r)
		}
		d.close()
	}
}

// TestResponseWithoutHeaders: a response body with no response headers
// before it (response_header_mode SKIP, the override asking SEND not
// honoured) cannot be judged, its kind being unknown: it is refused
// rather than passed, and so are response trailers alone.
func TestResponseWithoutHeaders(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	fx := newFixture(t, keys{"hold": {Name: "hold", Policy: fc.policy}}, defaultFilter, 0)
	for _, last := range []*extprocv3.ProcessingRequest{
		respBody(sseBody(testResponse, 3)[:64], false),
		{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	} {
		d := fx.env.drive()
		d.do(withConfig(reqHeaders("hold"), filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED))
		if r := d.do(reqBody(chatBody(fc.prompt, true))); r.GetRequestBody() == nil {
			t.Fatalf("prompt answered with %v", r)
		}
		refused(t, d.do(last), http.StatusInternalServerError, "guard_unavailable")
		d.close()
	}
}

// TestMessagesWithoutRequestHeaders: a request body or trailers, or any
// part of a response, with no request headers before it
// (request_header_mode SKIP, or any client of the ext_proc port, which
// has no authentication of its own) is refused: nothing says what the
// request is or who sent it. (A request body used to reach a nil
// admission and panic, which ended the whole server.)
func TestMessagesWithoutRequestHeaders(t *testing.T) {
	m := tinyModel(t)
	ext, err := proxy.NewExternal(proxy.Config{DefaultTenant: proxy.Tenant{Name: "default", Policy: safePolicy(m)}}, proxy.Direct(m))
	if err != nil {
		t.Fatal(err)
	}
	svc, err := extproc.New(extproc.Config{External: ext, Admit: keys{}})
	if err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*extprocv3.ProcessingRequest{
		"request body":      reqBody(chatBody("hi", true)),
		"request trailers":  {Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
		"response headers":  respHeaders("text/event-stream"),
		"response body":     respBody(sseBody("Fine.", 2), true),
		"response trailers": {Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	} {
		// A second message after the refusal gets no answer.
		st := &serverStream{in: []*extprocv3.ProcessingRequest{r, reqBody(chatBody("hi", true))}}
		if err := svc.Process(st); err != nil {
			t.Errorf("%s: Process: %v", name, err)
		}
		if len(st.sent) != 1 {
			t.Fatalf("%s: %d answers", name, len(st.sent))
		}
		refused(t, st.sent[0], http.StatusInternalServerError, "guard_unavailable")
		if !strings.Contains(string(st.sent[0].GetImmediateResponse().GetBody()), "request_header_mode SEND") {
			t.Errorf("%s: %s", name, st.sent[0].GetImmediateResponse().GetBody())
		}
	}
}

// countingAdmit admits as keys do and counts the admissions not yet done.
type countingAdmit struct {
	keys
	admitted, open atomic.Int64
}

func (c *countingAdmit) Admit(ctx context.Context, h http.Header) (extproc.Admission, *proxy.Answer) {
	a, ans := c.keys.Admit(ctx, h)
	if ans == nil {
		c.admitted.Add(1)
		c.open.Add(1)
		a.Done = func(int) { c.open.Add(-1) }
	}
	return a, ans
}

// TestRepeatedHeaders: Envoy sends each headers message once. A second
// request headers message on a stream is refused instead of admitting the
// exchange again (a second connection slot of the tenant's, of which only
// the last would have been released), a second response headers message
// instead of starting a second relay.
func TestRepeatedHeaders(t *testing.T) {
	m := tinyModel(t)
	ext, err := proxy.NewExternal(proxy.Config{DefaultTenant: proxy.Tenant{Name: "default", Policy: safePolicy(m)}}, proxy.Direct(m))
	if err != nil {
		t.Fatal(err)
	}
	adm := &countingAdmit{keys: keys{"k": {Name: "k", Policy: safePolicy(m)}}}
	svc, err := extproc.New(extproc.Config{External: ext, Admit: adm})
	if err != nil {
		t.Fatal(err)
	}
	env := &envoy{t: t, client: startService(t, svc), f: defaultFilter}

	d := env.drive()
	if r := d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED)); r.GetRequestHeaders() == nil {
		t.Fatalf("request headers answered with %v", r)
	}
	refused(t, d.do(reqHeaders("k")), http.StatusInternalServerError, "guard_unavailable")
	d.close()

	d = env.drive()
	d.do(withConfig(reqHeaders("k"), filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_STREAMED))
	d.do(reqBody(chatBody("hi", true)))
	if r := d.do(respHeaders("text/event-stream")); r.GetResponseHeaders() == nil {
		t.Fatalf("response headers answered with %v", r)
	}
	refused(t, d.do(respHeaders("text/event-stream")), http.StatusInternalServerError, "guard_unavailable")
	d.close()

	if n, open := adm.admitted.Load(), adm.open.Load(); n != 2 || open != 0 {
		t.Errorf("%d admissions for 2 exchanges, %d not done", n, open)
	}
}

// TestChatPathVariants: a request is classified by its path as upstreams
// route it: percent-decoded (uvicorn, hence vLLM and LiteLLM, decodes
// before routing; a double encoding too), without its query, ";"
// parameters dropped, slashes merged, dot segments resolved, with or
// without "/v1", in any case; where an encoded "?" makes readings differ,
// the most cautious.
// Every spelling of the chat path is judged (the tenant's policy flags
// every prompt: 400 before the upstream is called); the legacy
// completions and Responses APIs, which the guard cannot judge, are
// refused with 403 unsupported_endpoint before any admission; other
// routes still pass untouched but for the tenant key, which no upstream
// gets on any route, their bodies switched to NONE (the filter runs on
// every route).
func TestChatPathVariants(t *testing.T) {
	m := tinyModel(t)
	fx := newFixture(t, keys{"k": {Name: "k", Policy: promptPolicy(m)}}, defaultFilter, 0)
	upBody := sseBody("Unjudged generated text.", 5)
	judged := []string{
		"/v1/chat/completions?stream=1", "/v1/chat/completion%73", "/v1/chat/%63ompletions", "/v1/chat/%2563ompletions",
		"/v1//chat/completions", "/v1/./chat/../chat/completions", "/v1/chat/completions/", "/v1%2Fchat%2Fcompletions",
		"/v1\\chat\\completions", "/chat/completions", "/V1/Chat/Completions", "/openai/deployments/gpt/chat/completions",
		"/v1/chat/completions;v=1", "/x;/v1/chat/completions", "/v1/chat/completions%3F", "/x%3F/v1/chat/completions",
	}
	// A chat body sent to the Responses API is read as one: refused for
	// its missing input, the upstream never called.
	responses := []string{"/v1/responses", "/responses", "//v1/responses/?x=1", "/v1/respon%73es"}
	// A stored response's cancel returns it, output and all.
	unjudged := []string{"/v1/completions", "/completions", "/v1/complet%69ons", "/v1/responses%3F/v1/chat/completions", "/v1/chat/completions%3F/v1/responses",
		"/v1/responses/resp_1/cancel"}
	other := []string{"/v1/embeddings", "/v1/models/org%2Fmodel"}
	for _, p := range slices.Concat(judged, responses, unjudged, other) {
		t.Run(p, func(t *testing.T) {
			fx.env.t = t
			o := fx.env.exchange(context.Background(), request{path: p, header: map[string]string{"X-Api-Key": "k"}, body: chatBody("flag me", true)}, sseReply([][]byte{upBody}))
			switch {
			case slices.Contains(judged, p):
				if o.phase != "request_body" || o.status != http.StatusBadRequest || o.upstreamCalled || !bytes.Contains(o.body, []byte(`"code":"content_filter"`)) {
					t.Errorf("not judged: %s", fmtOutcome(o))
				}
			case slices.Contains(responses, p):
				if o.phase != "request_body" || o.status != http.StatusBadRequest || o.upstreamCalled || !bytes.Contains(o.body, []byte(`input: a prompt is required`)) {
					t.Errorf("not read as the Responses API: %s", fmtOutcome(o))
				}
			case slices.Contains(unjudged, p):
				if o.phase != "request_headers" || o.status != http.StatusForbidden || o.upstreamCalled || !bytes.Contains(o.body, []byte(`"code":"unsupported_endpoint"`)) {
					t.Errorf("not refused: %s", fmtOutcome(o))
				}
			default:
				// Untouched but for the key, and neither body sent to
				// the service.
				if o.immediate != nil || !bytes.Equal(o.body, upBody) || o.upstreamHeader.Values("X-Api-Key") != nil ||
					!bytes.Equal(o.upstreamBody, chatBody("flag me", true)) || o.bodyMode != filterv3.ProcessingMode_NONE {
					t.Errorf("not passed untouched: %s (response body mode %v)", fmtOutcome(o), o.bodyMode)
				}
			}
		})
	}
}

// responsesSSE is an upstream's Responses API stream of text in deltas of
// about size bytes, numbered and named as OpenAI sends it.
func responsesSSE(text string, size int) []byte {
	var out []byte
	seq := 0
	ev := func(typ string, m map[string]any) {
		m["type"], m["sequence_number"] = typ, seq
		seq++
		b, _ := json.Marshal(m)
		out = fmt.Appendf(out, "event: %s\ndata: %s\n\n", typ, b)
	}
	resp := func(status string, output []any) map[string]any {
		return map[string]any{"id": "resp_fake42", "object": "response", "created_at": 1700000000, "status": status, "model": "fake-llm", "output": output}
	}
	at := func(kv ...any) map[string]any {
		m := map[string]any{"item_id": "msg_1", "output_index": 0, "content_index": 0}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	}
	ev("response.created", map[string]any{"response": resp("in_progress", []any{})})
	ev("response.output_item.added", map[string]any{"output_index": 0, "item": map[string]any{"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []any{}}})
	ev("response.content_part.added", at("part", map[string]any{"type": "output_text", "text": "", "annotations": []any{}}))
	for rest := text; len(rest) > 0; {
		n := min(size, len(rest))
		for n < len(rest) && !utf8.RuneStart(rest[n]) {
			n++
		}
		ev("response.output_text.delta", at("delta", rest[:n], "logprobs", []any{}))
		rest = rest[n:]
	}
	part := map[string]any{"type": "output_text", "text": text, "annotations": []any{}}
	ev("response.output_text.done", at("text", text, "logprobs", []any{}))
	ev("response.content_part.done", at("part", part))
	item := map[string]any{"id": "msg_1", "type": "message", "status": "completed", "role": "assistant", "content": []any{part}}
	ev("response.output_item.done", map[string]any{"output_index": 0, "item": item})
	ev("response.completed", map[string]any{"response": resp("completed", []any{item})})
	return out
}

// TestResponsesAPI: a Responses API request (POST /v1/responses) is judged
// as the proxy judges one: a safe stream passes byte for byte, a flagged
// one is cut exactly as the proxy's own /v1/responses cuts it (ending
// with response.incomplete), in every body mode and chunking.
func TestResponsesAPI(t *testing.T) {
	m := tinyModel(t)
	fc := findFlag(t, m)
	upBody := responsesSSE(testResponse, 3)
	reqBody, _ := json.Marshal(map[string]any{"model": "fake-llm", "stream": true, "input": fc.prompt})
	hold := proxy.Tenant{Name: "hold", Policy: fc.policy}
	safe := proxy.Tenant{Name: "safe", Policy: safePolicy(m)}
	_, _, want := viaProxyAt(t, "/v1/responses", m, hold, reqBody, "text/event-stream", upBody)
	if !bytes.Contains(want, []byte("event: response.incomplete\n")) || !bytes.Contains(want, []byte(`"reason":"content_filter"`)) {
		t.Fatalf("the proxy's own cut:\n%s", want)
	}
	for _, md := range modes {
		fx := newFixture(t, keys{"hold": &hold, "safe": &safe}, md.f, 0)
		for name, chunks := range chunkings(upBody) {
			t.Run(md.name+"/"+name, func(t *testing.T) {
				fx.env.t = t
				req := request{path: "/v1/responses", header: map[string]string{"X-Api-Key": "hold"}, body: reqBody}
				o := fx.env.exchange(context.Background(), req, sseReply(chunks))
				if normalize(o.body) != normalize(want) {
					t.Fatalf("hold-back: client got\n%s\nthe proxy sends\n%s", o.body, want)
				}
				if ev := fx.lastEvent(); ev != proxy.EventResponseFlagged {
					t.Errorf("audit event %q", ev)
				}
				req.header = map[string]string{"X-Api-Key": "safe"}
				if o = fx.env.exchange(context.Background(), req, sseReply(chunks)); !bytes.Equal(o.body, upBody) {
					t.Fatalf("a safe answer changed:\n%s", o.body)
				}
			})
		}
	}
}
