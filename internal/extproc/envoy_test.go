package extproc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/streamguard/streamguard/internal/extproc"
)

// This file is a small Envoy: it drives the ext_proc service over a real
// gRPC connection exactly as Envoy's ext_proc filter does for one HTTP
// exchange, applying every mutation the service answers, and reports what
// the upstream and the client would have received.

// startService serves svc on an in-memory gRPC listener.
func startService(t testing.TB, svc *extproc.Service) extprocv3.ExternalProcessorClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	svc.Register(gs)
	go gs.Serve(ln)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// filter is the ext_proc filter's configuration.
type filter struct {
	reqMode, respMode filterv3.ProcessingMode_BodySendMode
	// allowOverride is allow_mode_override: mode_override is honoured.
	allowOverride bool
	// noProtocolConfig: an Envoy too old to send protocol_config.
	noProtocolConfig bool
}

var defaultFilter = filter{reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_STREAMED, allowOverride: true}

// request is the client's request.
type request struct {
	header map[string]string
	body   []byte
	// chunks is how the body reaches Envoy in STREAMED and
	// FULL_DUPLEX_STREAMED modes (nil: one chunk).
	chunks [][]byte
	path   string // default /v1/chat/completions
}

// upstreamReply is the upstream's answer: status, headers, and the body
// in the pieces Envoy gets it in.
type upstreamReply struct {
	status int
	header map[string]string
	chunks [][]byte
	// pace is a pause before each chunk after the first.
	pace time.Duration
}

// outcome is what the exchange came to.
type outcome struct {
	// immediate is the service's ImmediateResponse, and the phase it came
	// in ("request_headers", "request_body", "response_headers",
	// "response_body").
	immediate *extprocv3.ImmediateResponse
	phase     string

	upstreamCalled bool
	upstreamHeader http.Header
	upstreamBody   []byte

	// What the client got (from the upstream, or the immediate response).
	status int
	header http.Header
	body   []byte
	// bodyMode is the response body mode that was in effect.
	bodyMode filterv3.ProcessingMode_BodySendMode
	// answers counts the service's answers to response body chunks;
	// last is the size of the last one's body.
	answers int
	last    int
}

// envoy runs exchanges against one service.
type envoy struct {
	t      testing.TB
	client extprocv3.ExternalProcessorClient
	f      filter
}

type exchangeRun struct {
	e      *envoy
	stream extprocv3.ExternalProcessor_ProcessClient
	first  bool
	f      filter
	out    outcome
}

func (x *exchangeRun) send(r *extprocv3.ProcessingRequest) {
	if x.first && !x.f.noProtocolConfig {
		r.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: x.f.reqMode, ResponseBodyMode: x.f.respMode}
	}
	x.first = false
	if err := x.stream.Send(r); err != nil {
		x.e.t.Fatalf("send: %v", err)
	}
}

func (x *exchangeRun) recv() *extprocv3.ProcessingResponse {
	r, err := x.stream.Recv()
	if err != nil {
		x.e.t.Fatalf("recv: %v", err)
	}
	return r
}

func envoyHeaders(pseudo map[string]string, h map[string]string) *corev3.HeaderMap {
	m := &corev3.HeaderMap{}
	for k, v := range pseudo {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	for k, v := range h {
		m.Headers = append(m.Headers, &corev3.HeaderValue{Key: strings.ToLower(k), RawValue: []byte(v)})
	}
	return m
}

// applyHeaders applies a header mutation as Envoy does; it returns the
// :status it sets, if any.
func applyHeaders(t testing.TB, h http.Header, m *extprocv3.HeaderMutation) string {
	status := ""
	for _, k := range m.GetRemoveHeaders() {
		h.Del(k)
	}
	for _, o := range m.GetSetHeaders() {
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %q: append action %v", o.GetHeader().GetKey(), o.GetAppendAction())
		}
		if o.GetHeader().GetValue() != "" {
			t.Errorf("header %q set in value, not raw_value", o.GetHeader().GetKey())
		}
		k, v := o.GetHeader().GetKey(), string(o.GetHeader().GetRawValue())
		if k != strings.ToLower(k) {
			t.Errorf("header key %q is not lower case", k)
		}
		if k == ":status" {
			status = v
			continue
		}
		h.Set(k, v)
	}
	return status
}

// applyOverride applies a mode_override where the filter allows it.
func (x *exchangeRun) applyOverride(r *extprocv3.ProcessingResponse) {
	if o := r.GetModeOverride(); o != nil && x.f.allowOverride {
		x.f.reqMode, x.f.respMode = o.GetRequestBodyMode(), o.GetResponseBodyMode()
		if o.GetResponseHeaderMode() != filterv3.ProcessingMode_SEND {
			x.e.t.Errorf("mode override %v drops the response headers", o)
		}
	}
}

// bodyOf applies a non-streamed body mutation to one chunk.
func bodyOf(t testing.TB, chunk []byte, c *extprocv3.CommonResponse) []byte {
	switch m := c.GetBodyMutation().GetMutation().(type) {
	case nil:
		return chunk
	case *extprocv3.BodyMutation_Body:
		return m.Body
	case *extprocv3.BodyMutation_ClearBody:
		return nil
	default:
		t.Fatalf("body mutation %T outside FULL_DUPLEX_STREAMED", m)
	}
	return nil
}

func splitBody(body []byte, chunks [][]byte) [][]byte {
	if chunks != nil {
		return chunks
	}
	return [][]byte{body}
}

// exchange runs one HTTP exchange through the service. up answers the
// request the upstream receives. ctx ends the exchange early (the client
// going away) when cancel is called by the caller.
func (e *envoy) exchange(ctx context.Context, req request, up func(header http.Header, body []byte) upstreamReply) outcome {
	e.t.Helper()
	st, err := e.client.Process(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	x := &exchangeRun{e: e, stream: st, first: true, f: e.f}
	path := req.path
	if path == "" {
		path = "/v1/chat/completions"
	}
	upHeader := http.Header{}
	for k, v := range req.header {
		upHeader.Set(k, v)
	}
	x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers:     envoyHeaders(map[string]string{":method": "POST", ":path": path, ":authority": "gw", ":scheme": "http"}, req.header),
		EndOfStream: len(req.body) == 0,
	}}})
	r := x.recv()
	if im := r.GetImmediateResponse(); im != nil {
		return x.immediate(im, "request_headers")
	}
	applyHeaders(e.t, upHeader, r.GetRequestHeaders().GetResponse().GetHeaderMutation())
	x.applyOverride(r)
	upBody, im := x.requestBody(req)
	if im != nil {
		return x.immediate(im, "request_body")
	}
	x.out.upstreamCalled, x.out.upstreamHeader, x.out.upstreamBody = true, upHeader, upBody
	reply := up(upHeader, upBody)
	x.response(reply)
	return x.out
}

func (x *exchangeRun) immediate(im *extprocv3.ImmediateResponse, phase string) outcome {
	x.out.immediate, x.out.phase = im, phase
	x.out.status = int(im.GetStatus().GetCode())
	x.out.header = http.Header{}
	applyHeaders(x.e.t, x.out.header, im.GetHeaders())
	x.out.body = im.GetBody()
	x.closeStream()
	return x.out
}

// closeStream ends the gRPC stream as Envoy does once the exchange is
// over, and waits for the service to end it too.
func (x *exchangeRun) closeStream() {
	_ = x.stream.CloseSend()
	for {
		if _, err := x.stream.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				x.e.t.Errorf("stream ended with %v", err)
			}
			return
		}
		x.e.t.Error("an answer after the exchange was over")
	}
}

// requestBody sends the request body in the filter's request body mode and
// returns what the upstream receives.
func (x *exchangeRun) requestBody(req request) ([]byte, *extprocv3.ImmediateResponse) {
	t := x.e.t
	if len(req.body) == 0 {
		return nil, nil
	}
	switch x.f.reqMode {
	case filterv3.ProcessingMode_NONE:
		return req.body, nil
	case filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_BUFFERED_PARTIAL:
		x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: req.body, EndOfStream: true}}})
		r := x.recv()
		if im := r.GetImmediateResponse(); im != nil {
			return nil, im
		}
		return bodyOf(t, req.body, r.GetRequestBody().GetResponse()), nil
	}
	chunks := splitBody(req.body, req.chunks)
	for i, c := range chunks {
		x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: c, EndOfStream: i == len(chunks)-1}}})
	}
	var up []byte
	if x.f.reqMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		for {
			r := x.recv()
			if im := r.GetImmediateResponse(); im != nil {
				return nil, im
			}
			sr := r.GetRequestBody().GetResponse().GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				t.Fatalf("FULL_DUPLEX_STREAMED answer without a streamed_response: %v", r)
			}
			up = append(up, sr.GetBody()...)
			if sr.GetEndOfStream() {
				return up, nil
			}
		}
	}
	for _, c := range chunks {
		r := x.recv()
		if im := r.GetImmediateResponse(); im != nil {
			return nil, im
		}
		if r.GetRequestBody() == nil {
			t.Fatalf("request body chunk answered with %T", r.GetResponse())
		}
		up = append(up, bodyOf(t, c, r.GetRequestBody().GetResponse())...)
	}
	return up, nil
}

// response sends the upstream's reply through the filter.
func (x *exchangeRun) response(reply upstreamReply) {
	t := x.e.t
	status := reply.status
	if status == 0 {
		status = http.StatusOK
	}
	x.out.header = http.Header{}
	for k, v := range reply.header {
		x.out.header.Set(k, v)
	}
	body := bytes.Join(reply.chunks, nil)
	if x.out.header.Get("Content-Length") == "" && !strings.HasPrefix(x.out.header.Get("Content-Type"), "text/event-stream") {
		x.out.header.Set("Content-Length", strconv.Itoa(len(body)))
	}
	x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers:     envoyHeaders(map[string]string{":status": strconv.Itoa(status)}, flat(x.out.header)),
		EndOfStream: len(body) == 0,
	}}})
	r := x.recv()
	if im := r.GetImmediateResponse(); im != nil {
		x.immediate(im, "response_headers")
		return
	}
	if r.GetResponseHeaders() == nil {
		t.Fatalf("response headers answered with %T", r.GetResponse())
	}
	applyHeaders(t, x.out.header, r.GetResponseHeaders().GetResponse().GetHeaderMutation())
	x.applyOverride(r)
	x.out.status = status
	x.out.bodyMode = x.f.respMode
	if x.f.respMode != filterv3.ProcessingMode_BUFFERED && x.f.respMode != filterv3.ProcessingMode_NONE {
		// Envoy removes Content-Length when a streamed body may change.
		x.out.header.Del("Content-Length")
	}
	if len(body) == 0 {
		x.closeStream()
		return
	}
	switch x.f.respMode {
	case filterv3.ProcessingMode_NONE:
		x.out.body = body
	case filterv3.ProcessingMode_BUFFERED, filterv3.ProcessingMode_BUFFERED_PARTIAL:
		x.send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: body, EndOfStream: true}}})
		r := x.recv()
		if im := r.GetImmediateResponse(); im != nil {
			x.immediate(im, "response_body")
			return
		}
		c := r.GetResponseBody().GetResponse()
		x.out.answers++
		if s := applyHeaders(t, x.out.header, c.GetHeaderMutation()); s != "" {
			x.out.status, _ = strconv.Atoi(s)
		}
		x.out.body = bodyOf(t, body, c)
		if cl := x.out.header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(x.out.body)) {
			t.Errorf("content-length %s for a body of %d bytes", cl, len(x.out.body))
		}
	default:
		x.streamResponse(reply)
	}
	x.closeStream()
}

func flat(h http.Header) map[string]string {
	m := map[string]string{}
	for k := range h {
		m[k] = h.Get(k)
	}
	return m
}

// streamResponse sends the body chunks as they come from the upstream,
// without waiting for answers (Envoy's STREAMED and FULL_DUPLEX_STREAMED
// modes), and gathers the answers.
func (x *exchangeRun) streamResponse(reply upstreamReply) {
	t := x.e.t
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, c := range reply.chunks {
			if i > 0 && reply.pace > 0 {
				time.Sleep(reply.pace)
			}
			err := x.stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: c, EndOfStream: i == len(reply.chunks)-1}}})
			if err != nil {
				return // the exchange was cancelled
			}
		}
	}()
	defer wg.Wait()
	if x.f.respMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		for {
			r, err := x.stream.Recv()
			if err != nil {
				t.Errorf("recv: %v", err)
				return
			}
			sr := r.GetResponseBody().GetResponse().GetBodyMutation().GetStreamedResponse()
			if sr == nil {
				t.Fatalf("FULL_DUPLEX_STREAMED answer without a streamed_response: %v", r)
			}
			x.out.answers++
			x.out.body = append(x.out.body, sr.GetBody()...)
			if sr.GetEndOfStream() {
				return
			}
		}
	}
	for _, c := range reply.chunks {
		r, err := x.stream.Recv()
		if err != nil {
			t.Errorf("recv: %v", err)
			return
		}
		if r.GetResponseBody() == nil {
			t.Fatalf("response body chunk answered with %T", r.GetResponse())
		}
		if r.GetResponseBody().GetResponse().GetHeaderMutation() != nil {
			t.Errorf("a header mutation in a STREAMED body answer (Envoy ignores it)")
		}
		x.out.answers++
		b := bodyOf(t, c, r.GetResponseBody().GetResponse())
		x.out.body = append(x.out.body, b...)
		x.out.last = len(b)
	}
}

// split cuts b into pieces of n bytes (the last shorter).
func split(b []byte, n int) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, b[:k])
		b = b[k:]
	}
	return out
}

func fmtOutcome(o outcome) string {
	return fmt.Sprintf("phase %q status %d header %v body %q", o.phase, o.status, o.header, o.body)
}

// Single messages, for tests that drive the stream by hand.

func reqHeaders(key string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: envoyHeaders(map[string]string{":method": "POST", ":path": "/v1/chat/completions"}, map[string]string{"x-api-key": key})}}}
}

func reqBody(b []byte) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: b, EndOfStream: true}}}
}

func respHeaders(contentType string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: envoyHeaders(map[string]string{":status": "200"}, map[string]string{"content-type": contentType})}}}
}

func respBody(b []byte, end bool) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: b, EndOfStream: end}}}
}

// drive is an ext_proc stream driven by hand, one message at a time, for
// message sequences the filter's configuration (or a client speaking
// ext_proc on its own) produces and the exchange above does not.
type drive struct {
	t  testing.TB
	st extprocv3.ExternalProcessor_ProcessClient
}

func (e *envoy) drive() drive {
	st, err := e.client.Process(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return drive{e.t, st}
}

// do sends r and returns the answer.
func (d drive) do(r *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	d.t.Helper()
	if err := d.st.Send(r); err != nil {
		d.t.Fatalf("send: %v", err)
	}
	a, err := d.st.Recv()
	if err != nil {
		d.t.Fatalf("recv: %v", err)
	}
	return a
}

// close ends the stream as Envoy does, and waits for the service to end it.
func (d drive) close() {
	d.t.Helper()
	_ = d.st.CloseSend()
	for {
		if _, err := d.st.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				d.t.Errorf("stream ended with %v", err)
			}
			return
		}
		d.t.Error("an answer after the exchange was over")
	}
}

// refused checks that r is the service's refusal with the status and
// error code given, in OpenAI's error shape.
func refused(t testing.TB, r *extprocv3.ProcessingResponse, status int, code string) {
	t.Helper()
	im := r.GetImmediateResponse()
	if im == nil {
		t.Fatalf("answered with %T, want an ImmediateResponse %d %s", r.GetResponse(), status, code)
	}
	var e struct {
		Error struct{ Message, Type, Code string }
	}
	if err := json.Unmarshal(im.GetBody(), &e); err != nil || int(im.GetStatus().GetCode()) != status || e.Error.Code != code || e.Error.Message == "" {
		t.Fatalf("ImmediateResponse %d %s (%v), want %d %s", im.GetStatus().GetCode(), im.GetBody(), err, status, code)
	}
}

// withConfig is r with the filter's protocol_config, as Envoy sends it on
// a stream's first message.
func withConfig(r *extprocv3.ProcessingRequest, req, resp filterv3.ProcessingMode_BodySendMode) *extprocv3.ProcessingRequest {
	r.ProtocolConfig = &extprocv3.ProtocolConfiguration{RequestBodyMode: req, ResponseBodyMode: resp}
	return r
}

// serverStream is a gRPC server stream fed from a slice, so that
// Service.Process runs on the test's goroutine, where a panic fails the
// test instead of killing the test binary.
type serverStream struct {
	grpc.ServerStream
	in   []*extprocv3.ProcessingRequest
	sent []*extprocv3.ProcessingResponse
}

func (f *serverStream) Context() context.Context { return context.Background() }

func (f *serverStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if len(f.in) == 0 {
		return nil, io.EOF
	}
	r := f.in[0]
	f.in = f.in[1:]
	return r, nil
}

func (f *serverStream) Send(r *extprocv3.ProcessingResponse) error {
	f.sent = append(f.sent, r)
	return nil
}
