package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/safecache"
)

type handler struct {
	api      api
	cfg      Config
	mod      Moderator
	endpoint string
	client   *http.Client
	safe     *safecache.Cache // declared text judged safe (judgeDeclared)
	convs    *conversations   // Responses API conversations relayed (previous_response_id)
}

// NewHandler returns the handler of POST /v1/chat/completions (it serves
// that request on whatever path it is mounted).
func NewHandler(cfg Config, m Moderator) (http.Handler, error) {
	return newAPIHandler(cfg, m, chatAPI{})
}

// NewResponsesHandler returns the handler of POST /v1/responses, the
// Responses API (responses.go), on whatever path it is mounted.
func NewResponsesHandler(cfg Config, m Moderator) (http.Handler, error) {
	return newAPIHandler(cfg, m, responsesAPI{})
}

func newAPIHandler(cfg Config, m Moderator, a api) (http.Handler, error) {
	ep, err := endpoint(cfg.Upstream, a.path())
	if err != nil {
		return nil, err
	}
	h, err := newHandler(cfg, m)
	if err != nil {
		return nil, err
	}
	h.api, h.endpoint = a, ep
	if h.client == nil {
		h.client = defaultClient()
	}
	return h, nil
}

// newHandler checks cfg and fills in its defaults; the upstream's
// endpoint and client are the caller's.
func newHandler(cfg Config, m Moderator) (*handler, error) {
	if m == nil {
		return nil, errors.New("proxy: no moderator")
	}
	if err := cfg.DefaultTenant.check(); err != nil {
		return nil, fmt.Errorf("proxy: default %w", err)
	}
	if cfg.IdleTimeout < 0 || cfg.HeaderTimeout < 0 || cfg.WriteIdleTimeout < 0 || cfg.MaxRequestBytes < 0 {
		return nil, errors.New("proxy: negative IdleTimeout, HeaderTimeout, WriteIdleTimeout or MaxRequestBytes")
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.WriteIdleTimeout == 0 {
		cfg.WriteIdleTimeout = DefaultWriteIdleTimeout
	}
	if cfg.HeaderTimeout == 0 {
		cfg.HeaderTimeout = DefaultHeaderTimeout
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = defaultMaxRequestBytes
	}
	return &handler{api: chatAPI{}, cfg: cfg, mod: m, client: cfg.Client, safe: safecache.New(safecache.Entries),
		convs: newConversations(conversationBytes)}, nil
}

// exchange is one request being served.
type exchange struct {
	h     *handler
	w     http.ResponseWriter
	r     *http.Request
	t     *Tenant
	id    string
	start time.Time
	body  []byte
	req   *chatRequest
	// answered: the upstream's response arrived, so the answer was
	// generated (and billed); an error the proxy gives from then on tells
	// the client not to retry.
	answered bool

	// ctx is the upstream call's context: cancelled when the client goes
	// away, at a cut, at an upstream timeout (cause errUpstreamTimeout)
	// and when the exchange ends.
	ctx         context.Context
	cancelCause context.CancelCauseFunc

	tokens   int
	finished bool
	// unjudged is why text goes to the client unjudged (a fail-open
	// tenant's guard failed): every way the exchange ends says so.
	unjudged error
	// respID is the id of the Responses API answer being relayed (its
	// snapshot's), forgotten for continuations unless it ends allowed.
	respID string

	// ext is the external driver's call (nil for the handler's own
	// requests): a fail-open request is then marked, not forwarded.
	ext *Call
	// statusSent: the response's status already reached the client (an
	// external driver's streamed body modes), so a flagged whole
	// response is answered in the refusal-completion form.
	statusSent bool
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{h: h, w: newClientWriter(w, h.cfg.WriteIdleTimeout), r: r, t: tenantFrom(r.Context(), &h.cfg.DefaultTenant), id: newID(), start: time.Now()}
	x.ctx, x.cancelCause = context.WithCancelCause(r.Context())
	defer x.cancel()
	w.Header().Set("X-Streamguard-Request-Id", x.id)
	// The request id the OpenAI SDKs show (response._request_id,
	// APIError.request_id); an upstream's own replaces it (copyHeaders).
	w.Header().Set("X-Request-Id", x.id)
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		x.fail(http.StatusMethodNotAllowed, EventBadRequest, apiError{Message: "use POST", Type: typeInvalidRequest, Code: "method_not_allowed"})
		return
	}
	if err := x.t.check(); err != nil {
		x.fail(http.StatusInternalServerError, EventGuardError, apiError{Message: "streamguard: " + err.Error(), Type: typeServer, Code: "tenant_config"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxRequestBytes))
	if err != nil {
		status, code := http.StatusBadRequest, "bad_request"
		var timeout interface{ Timeout() bool }
		switch {
		case errors.As(err, new(*http.MaxBytesError)):
			status = http.StatusRequestEntityTooLarge
		case errors.As(err, &timeout) && timeout.Timeout():
			// The server's body deadlines (or the connection's).
			status, code = http.StatusRequestTimeout, "request_timeout"
		}
		x.fail(status, EventBadRequest, apiError{Message: "streamguard: reading the request: " + err.Error(), Type: typeInvalidRequest, Code: code})
		return
	}
	x.body = body
	if x.req, err = h.api.parseRequest(body); err == nil {
		err = x.continued()
	}
	if err != nil {
		x.fail(http.StatusBadRequest, EventBadRequest, apiError{Message: "streamguard: " + err.Error(), Type: typeInvalidRequest, Code: "bad_request"})
		return
	}
	if len(x.req.Skipped) > 0 {
		w.Header().Set("X-Streamguard-Skipped", strings.Join(x.req.Skipped, ", "))
	}
	x.serve()
}

func (x *exchange) cancel() { x.cancelCause(nil) }

func (x *exchange) serve() {
	s := x.judgeRequest()
	if s == nil {
		return
	}
	resp, err := x.callUpstream()
	if err != nil {
		s.Close()
		x.upstreamFailed(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		s.Close()
		x.upstreamStatus(resp)
		return
	}
	if isEventStream(resp) {
		x.relayStream(s, resp)
		return
	}
	x.relayWhole(s, resp)
}

// judgeRequest opens the guard stream and judges the prompt. It returns
// the stream when the request may go upstream; otherwise the request was
// answered (refused, or forwarded unjudged by a fail-open tenant) and it
// returns nil.
//
// What the request declares beside its messages (chatRequest.Declared:
// tool definitions, a response format's schema) is judged first, alone,
// as a user turn; text after the last user turn (chatRequest.Trailing)
// next, on a stream of its own, as one more user turn after the
// conversation: the upstream model reads both, and the verdict the
// response stream starts from must stay the last user turn's.
func (x *exchange) judgeRequest() Stream {
	if len(x.req.Declared) > 0 && !x.judgeDeclared(x.req.Declared, 0) {
		return nil
	}
	if x.req.Trailing != "" {
		s := x.judgeConversation(append(x.req.Messages[:len(x.req.Messages):len(x.req.Messages)], guard.Message{Role: "user", Content: x.req.Trailing}))
		if s == nil {
			return nil
		}
		s.Close()
	}
	return x.judgeConversation(x.req.Messages)
}

// judgeDeclared judges items (chatmsg.Definitions) as one user turn on a
// stream of their own; false when the request was answered (as
// judgeRequest). Text judged safe for the tenant before is not judged
// again (internal/safecache). Items that do not fit the stream together are the
// client's error, as a conversation that does not fit is, unless the
// tenant opted in to TrimLongPrompt: then each half is judged alone (a
// length refusal queues nothing and costs no forward), down to
// maxDeclaredSplit halvings. Judged apart, two halves could each hide half
// of an instruction, and a request could make the guard judge its whole
// body: both are what such a tenant accepts, within that bound.
func (x *exchange) judgeDeclared(items []string, depth int) bool {
	text := strings.Join(items, "\n")
	key := safecache.Key(x.t.Name, x.t.Policy, text)
	if x.h.safe.Has(key) {
		return true // judged safe for this tenant before (an agent's next request)
	}
	s, err := x.h.mod.Open(x.ctx, x.t.Policy)
	if err != nil {
		x.guardFailed(err)
		return false
	}
	pv, err := s.JudgePrompt(x.ctx, []guard.Message{{Role: "user", Content: text}})
	s.Close()
	if x.promptLong(err) && len(items) > 1 && x.t.TrimLongPrompt && depth < maxDeclaredSplit {
		half := len(items) / 2
		return x.judgeDeclared(items[:half], depth+1) && x.judgeDeclared(items[half:], depth+1)
	}
	if err != nil || pv.Flagged {
		x.answerPrompt(pv, err)
		return false
	}
	x.h.safe.Add(key)
	return true
}

// maxDeclaredSplit bounds the halvings of declared items: at most 8
// streams' worth of them are judged for one request.
const maxDeclaredSplit = 3

// judgeConversation opens a guard stream and judges msgs as a prompt; nil
// when the request was answered (as judgeRequest).
func (x *exchange) judgeConversation(msgs []guard.Message) Stream {
	s, err := x.h.mod.Open(x.ctx, x.t.Policy)
	if err != nil {
		x.guardFailed(err)
		return nil
	}
	pv, err := judgePrompt(x.ctx, s, msgs, x.t.TrimLongPrompt)
	if err != nil || pv.Flagged {
		s.Close()
		x.answerPrompt(pv, err)
		return nil
	}
	return s
}

// guardFailed answers when the guard cannot judge the request: overloaded
// or failing. A fail-open tenant gets the upstream's answer unjudged.
func (x *exchange) guardFailed(err error) {
	if x.ctx.Err() != nil {
		x.finish(EventClientClosed)
		return
	}
	overloaded := errors.Is(err, ErrOverloaded)
	if x.t.FailOpen {
		x.unjudged = err
		if x.ext != nil {
			x.ext.unjudged = err
			return
		}
		x.forwardUnjudged(err)
		return
	}
	if overloaded {
		x.w.Header().Set("Retry-After", "1")
		x.fail(http.StatusServiceUnavailable, EventOverloaded, apiError{
			Message: "streamguard: the safety guard is at capacity; retry later", Type: typeServer, Code: "guard_overloaded"})
		return
	}
	x.fail(http.StatusServiceUnavailable, EventGuardError, apiError{
		Message: "streamguard: the safety guard failed: " + err.Error(), Type: typeServer, Code: "guard_unavailable"},
		slog.String("error", err.Error()))
}

// fail answers an error and records it.
func (x *exchange) fail(status int, event string, e apiError, attrs ...slog.Attr) {
	if x.answered {
		// A retry would have the upstream generate (and bill) the
		// answer again, for an error that would come again: the OpenAI
		// SDKs retry 408, 409, 429 and 5xx unless told not to.
		x.w.Header().Set("X-Should-Retry", "false")
	}
	writeError(x.w, status, e)
	x.finish(event, append(attrs, slog.Int("status", status), slog.String("code", e.Code))...)
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
