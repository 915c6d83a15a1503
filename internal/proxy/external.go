package proxy

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"
)

// External moderates chat completions that another proxy relays (Envoy's
// external processing, internal/extproc): the request's prompt is judged
// before the other proxy forwards it, then the upstream's answer as it
// passes through it, with the handler's rules, answers, audit records and
// outcomes. The caller hands over the request (Start), then the
// response's status and headers (Call.Response), then its body, streamed
// (Call.Stream) or whole (Call.Whole), and sends on what comes back. The
// upstream is called by the other proxy: Config.Upstream, Client,
// HeaderTimeout and IdleTimeout are not used (the other proxy times the
// upstream), and ForwardCookies neither (cookies are its business).
type External struct{ h, resp *handler }

// NewExternal checks cfg like NewHandler, less the upstream.
func NewExternal(cfg Config, m Moderator) (*External, error) {
	h, err := newHandler(cfg, m)
	if err != nil {
		return nil, err
	}
	resp := *h // the same settings and cache, the Responses API
	resp.api = responsesAPI{}
	return &External{h: h, resp: &resp}, nil
}

// MaxRequestBytes is the largest request body Start takes (Config's,
// 8 MiB by default); a whole response may be four times as large.
func (e *External) MaxRequestBytes() int64 { return e.h.cfg.MaxRequestBytes }

// DefaultTenant is the tenant of calls started without one.
func (e *External) DefaultTenant() *Tenant { return &e.h.cfg.DefaultTenant }

// Answer is an HTTP response for the client that the caller sends instead
// of the upstream's (or of the upstream's body): status, headers and body
// exactly as the handler answers (OpenAI's error shape, a refusal
// completion, a cut completion).
type Answer struct {
	Status int
	Header http.Header
	Body   []byte
}

// UpstreamHeaders says how the request's headers change on their way
// upstream, as the handler changes them: the caller's streamguard
// credentials (Authorization, X-Api-Key; unless the tenant forwards them)
// and its UpstreamAuthHeader are removed, and so is Accept-Encoding (the guard reads the answer's text,
// so the upstream must not compress it: see RefusedResponse);
// Authorization is then set to authorization when it is not empty (the
// caller's X-Upstream-Authorization, else the tenant's UpstreamKey).
func UpstreamHeaders(t *Tenant, h http.Header) (remove []string, authorization string) {
	remove = t.credentials(h)
	if len(h.Values("Accept-Encoding")) > 0 {
		remove = append(remove, "Accept-Encoding")
	}
	return remove, upstreamAuthorization(h.Get(UpstreamAuthHeader), t.UpstreamKey)
}

// PassHeaders is UpstreamHeaders for a request the guard does not judge
// (another API's route behind a gateway that sends every route here): the
// caller's streamguard credentials stay here all the same, and its
// UpstreamAuthHeader becomes Authorization; t is the default tenant, as
// nobody was admitted, so no tenant's UpstreamKey is used, and the answer
// may stay compressed.
func PassHeaders(t *Tenant, h http.Header) (remove []string, authorization string) {
	return t.credentials(h), upstreamAuthorization(h.Get(UpstreamAuthHeader), "")
}

// credentials lists the credential headers of h that stay here.
func (t *Tenant) credentials(h http.Header) []string {
	var remove []string
	for _, k := range credentialHeaders {
		if t.clientOnly(k) && len(h.Values(k)) > 0 {
			remove = append(remove, k)
		}
	}
	return remove
}

// Call is one exchange driven from outside. Its methods are called from
// one goroutine, except the Relay's.
type Call struct {
	x      *exchange
	cw     *captureWriter
	stop   context.CancelFunc // ends the request's context: the client is gone
	s      Stream             // the guard stream, from the prompt to the response
	relay  *Relay
	closed bool
	// unjudged is why a fail-open request goes upstream unjudged.
	unjudged error
}

// Start judges a request: its headers (the client's, for the audit and
// the answers) and its whole body. ctx is the client's: when it ends, the
// client is gone, and so is the call. t nil means the default tenant.
// When the request must not reach the upstream (a flagged prompt, a
// malformed or over-long request, the guard overloaded or failing for a
// tenant that does not fail open), Start returns the answer for the
// client; otherwise nil, and the call waits for the response. Either way
// the caller closes the call.
func (e *External) Start(ctx context.Context, t *Tenant, header http.Header, body []byte) (*Call, *Answer) {
	return e.start(e.h, ctx, t, header, body)
}

// StartResponses is Start for a Responses API request (POST
// /v1/responses): its body is read as one, and its answer judged and cut
// as one.
func (e *External) StartResponses(ctx context.Context, t *Tenant, header http.Header, body []byte) (*Call, *Answer) {
	return e.start(e.resp, ctx, t, header, body)
}

func (e *External) start(h *handler, ctx context.Context, t *Tenant, header http.Header, body []byte) (*Call, *Answer) {
	if t == nil {
		t = &e.h.cfg.DefaultTenant
	}
	rctx, stop := context.WithCancel(ctx)
	r, _ := http.NewRequestWithContext(rctx, http.MethodPost, "/v1"+h.api.path(), nil)
	if header != nil {
		r.Header = header
	}
	cw := newCaptureWriter()
	x := &exchange{h: h, w: cw, r: r, t: t, id: newID(), start: time.Now()}
	x.ctx, x.cancelCause = context.WithCancelCause(rctx)
	c := &Call{x: x, cw: cw, stop: stop}
	x.ext = c
	cw.Header().Set("X-Streamguard-Request-Id", x.id)
	if err := t.check(); err != nil {
		x.fail(http.StatusInternalServerError, EventGuardError, apiError{Message: "streamguard: " + err.Error(), Type: typeServer, Code: "tenant_config"})
		return c, cw.answer()
	}
	if int64(len(body)) > e.h.cfg.MaxRequestBytes {
		x.fail(http.StatusRequestEntityTooLarge, EventBadRequest, apiError{
			Message: "streamguard: reading the request: http: request body too large", Type: typeInvalidRequest, Code: "bad_request"})
		return c, cw.answer()
	}
	x.body = body
	var err error
	if x.req, err = h.api.parseRequest(body); err == nil {
		err = x.continued()
	}
	if err != nil {
		x.fail(http.StatusBadRequest, EventBadRequest, apiError{Message: "streamguard: " + err.Error(), Type: typeInvalidRequest, Code: "bad_request"})
		return c, cw.answer()
	}
	if len(x.req.Skipped) > 0 {
		cw.Header().Set("X-Streamguard-Skipped", strings.Join(x.req.Skipped, ", "))
	}
	c.s = x.judgeRequest()
	if c.s == nil && c.unjudged == nil {
		return c, cw.answer()
	}
	return c, nil
}

// ID is the call's request id (X-Streamguard-Request-Id).
func (c *Call) ID() string { return c.x.id }

// Streamed reports whether the request asked for a streamed answer.
func (c *Call) Streamed() bool { return c.x.req != nil && c.x.req.Stream }

// ResponseKind is how an upstream response is moderated.
type ResponseKind int

const (
	// PassResponse: the response goes to the client as it is (an
	// upstream error status, or a fail-open call's unjudged answer).
	PassResponse ResponseKind = iota
	// StreamResponse: an event stream, judged as it arrives (Relay).
	StreamResponse
	// WholeResponse: judged whole before anything of its body is sent
	// (Whole).
	WholeResponse
	// RefusedResponse: the body cannot be moderated (it is compressed:
	// a Content-Encoding other than identity); the client gets Refusal,
	// an OpenAI error, instead of the response.
	RefusedResponse
)

// Refusal is the answer that replaces a RefusedResponse.
func (c *Call) Refusal() *Answer { return c.cw.answer() }

// Response takes the upstream's status and headers and says how its body
// is moderated, with the headers to set on the client's response
// (X-Streamguard-Request-Id, -Skipped, -Mode, -Unjudged).
func (c *Call) Response(status int, h http.Header) (ResponseKind, http.Header) {
	c.x.answered = status/100 == 2 // as callUpstream
	set := http.Header{}
	for _, k := range []string{"X-Streamguard-Request-Id", "X-Streamguard-Skipped"} {
		if v := c.cw.Header().Get(k); v != "" {
			set.Set(k, v)
		}
	}
	switch {
	case c.unjudged != nil:
		set.Set("X-Streamguard-Unjudged", "1")
		return PassResponse, set
	case c.s == nil:
		return PassResponse, set
	case status/100 != 2:
		// An upstream error goes to the client as the other proxy relays
		// it; there is no text to judge.
		c.s.Close()
		c.s = nil
		c.x.finish(EventUpstreamError, slog.Int("upstream_status", status), slog.Int("status", status))
		return PassResponse, set
	}
	if enc := encoded(h); enc != "" {
		// The guard reads text, not compressed bytes; passed on, the
		// client would decompress what nobody judged. UpstreamHeaders
		// removes the client's Accept-Encoding, so an upstream that
		// compresses anyway is broken.
		c.s.Close()
		c.s = nil
		c.x.fail(http.StatusBadGateway, EventUpstreamError, apiError{
			Message: "streamguard: the upstream's response is compressed (Content-Encoding: " + enc + "); the guard judges only uncompressed text",
			Type:    typeUpstream, Code: "upstream_bad_response"})
		return RefusedResponse, set
	}
	if mt, _, _ := mime.ParseMediaType(h.Get("Content-Type")); mt == "text/event-stream" {
		set.Set("X-Streamguard-Mode", c.x.t.Mode.String())
		return StreamResponse, set
	}
	return WholeResponse, set
}

// Whole judges a whole response body (Response said WholeResponse). It
// returns nil when the client gets the body as it is, else the answer to
// send instead. statusSent means the response's status already went to
// the client (the other proxy streams the body): a flagged response is
// then answered as the upstream's completion cut before the flagging run
// with finish_reason "content_filter", whatever the tenant's refusal
// setting, and the caller can use only the answer's body.
func (c *Call) Whole(status int, body []byte, statusSent bool) *Answer {
	c.cw.reset(nil)
	s := c.s
	c.s = nil
	x := c.x
	if s == nil {
		return nil
	}
	if int64(len(body)) > x.h.cfg.maxResponseBytes() {
		s.Close()
		x.fail(http.StatusBadGateway, EventUpstreamError, apiError{Message: "streamguard: the upstream's response is too large to judge", Type: typeUpstream, Code: "upstream_too_large"})
		return c.cw.answer()
	}
	x.statusSent = statusSent
	x.h.api.judgeWhole(x, s, &http.Response{StatusCode: status, Header: http.Header{}}, body)
	a := c.cw.answer()
	if a.Status == status && bytes.Equal(a.Body, body) {
		return nil
	}
	return a
}

// Relay moderates a streamed response for an external driver: the
// upstream's body goes in with Push and End, in pieces of any size; what
// the client gets comes out of Take. Push, End, Sync and Take are called
// from one goroutine.
type Relay struct {
	r    *relay
	in   chan upstreamEvent
	sp   sseSplitter
	cw   *captureWriter
	done chan struct{}
	end  bool // End was called, or a push failed
}

// Stream starts moderating an event stream (Response said
// StreamResponse). onFlush, when not nil, is called on the relay's
// goroutine each time bytes for the client should go out now (the caller
// then sends Take()); without it, the caller takes them when it can send
// them (with its answer to each body chunk).
func (c *Call) Stream(onFlush func()) *Relay {
	c.cw.reset(onFlush)
	r := c.x.newRelay(c.s)
	c.s = nil
	rl := &Relay{r: r, in: make(chan upstreamEvent), cw: c.cw, done: make(chan struct{})}
	c.relay = rl
	go func() {
		defer close(rl.done)
		defer r.close()
		// The other proxy bounds the upstream's silence.
		r.run(rl.in, 0)
	}()
	return rl
}

func (rl *Relay) send(ue upstreamEvent) bool {
	select {
	case rl.in <- ue:
		return true
	case <-rl.done:
		return false
	}
}

// Push takes the next bytes of the upstream's body.
func (rl *Relay) Push(b []byte) {
	if rl.end {
		return
	}
	evs, err := rl.sp.push(b)
	for _, ev := range evs {
		if !rl.send(upstreamEvent{ev: ev}) {
			return
		}
	}
	if err != nil {
		rl.end = true
		rl.send(upstreamEvent{err: err})
	}
}

// End says the upstream's body ended. The relay then ends once everything
// was judged and written (Done).
func (rl *Relay) End() {
	if rl.end {
		return
	}
	rl.end = true
	rl.send(upstreamEvent{ev: rl.sp.end(), err: io.EOF})
}

// Sync waits until the text pushed so far was judged, so that hold-back
// released all it may, or for at most wait, or until interrupt fires (new
// input arrived) or the relay ends; wait 0 returns once the pushed events
// were taken (pass-through writes them at once).
func (rl *Relay) Sync(wait time.Duration, interrupt <-chan struct{}) {
	req := &syncRequest{interrupt: interrupt, done: make(chan struct{})}
	if wait > 0 {
		req.until = time.Now().Add(wait)
	}
	if !rl.send(upstreamEvent{sync: req}) {
		return
	}
	select {
	case <-req.done:
	case <-rl.done:
	}
}

// Take returns the bytes written for the client since the last Take.
func (rl *Relay) Take() []byte { return rl.cw.take() }

// Done is closed when the relay has ended: the response was judged and
// written to its end, cut, ended with an error event, or the client went
// away.
func (rl *Relay) Done() <-chan struct{} { return rl.done }

// Close ends the call: a relay still running stops as if the client went
// away, the guard stream is released, and a call that did not come to an
// end is recorded (client_closed; unjudged for a fail-open call).
func (c *Call) Close() {
	if c.closed {
		return
	}
	c.closed = true
	c.stop()
	if c.relay != nil {
		<-c.relay.done
	}
	if c.s != nil {
		c.s.Close()
		c.s = nil
	}
	if c.unjudged != nil {
		c.x.finish(EventUnjudged, slog.String("reason", c.unjudged.Error()))
	}
	c.x.finish(EventClientClosed)
	c.x.cancel()
}

// captureWriter is the http.ResponseWriter of an external call: what the
// exchange writes is kept for the caller.
type captureWriter struct {
	header  http.Header
	mu      sync.Mutex
	status  int
	body    bytes.Buffer
	onFlush func()
}

func newCaptureWriter() *captureWriter { return &captureWriter{header: http.Header{}} }

func (c *captureWriter) Header() http.Header { return c.header }

func (c *captureWriter) WriteHeader(code int) {
	c.mu.Lock()
	if c.status == 0 {
		c.status = code
	}
	c.mu.Unlock()
}

func (c *captureWriter) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.status == 0 {
		c.status = http.StatusOK
	}
	return c.body.Write(b)
}

// Flush is what http.ResponseController calls.
func (c *captureWriter) Flush() {
	c.mu.Lock()
	f := c.onFlush
	c.mu.Unlock()
	if f != nil {
		f()
	}
}

// reset starts a new part of the exchange: a fresh status and body,
// the same headers.
func (c *captureWriter) reset(onFlush func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status = 0
	c.body.Reset()
	c.onFlush = onFlush
}

func (c *captureWriter) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bytes.Clone(c.body.Bytes())
	c.body.Reset()
	return b
}

func (c *captureWriter) answer() *Answer {
	c.mu.Lock()
	defer c.mu.Unlock()
	status := c.status
	if status == 0 {
		status = http.StatusOK
	}
	return &Answer{Status: status, Header: c.header.Clone(), Body: bytes.Clone(c.body.Bytes())}
}

// encoded returns the response's Content-Encoding when it names any coding
// but identity, in any of its header lines or comma-separated values
// (clients join repeated lines and decode each coding), else "".
func encoded(h http.Header) string {
	for _, line := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(line, ",") {
			if c = strings.TrimSpace(c); c != "" && !strings.EqualFold(c, "identity") {
				return strings.Join(h.Values("Content-Encoding"), ", ")
			}
		}
	}
	return ""
}
