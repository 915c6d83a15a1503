package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamguard/streamguard/internal/proxy"
)

// Admitter decides whether an exchange is served, from its request
// headers: it authenticates the tenant key and applies the tenant's
// limits, as the HTTP server does for its own routes.
type Admitter interface {
	// Admit returns the admission, or the answer that refuses the
	// request (401, 429, in OpenAI's error shape).
	Admit(ctx context.Context, h http.Header) (Admission, *proxy.Answer)
}

// Admission is an admitted exchange.
type Admission struct {
	// Ctx is the context the exchange runs in (derived from the one given
	// to Admit): the proxy.Moderator reads the tenant from it.
	Ctx context.Context
	// Tenant holds the tenant's proxy settings.
	Tenant *proxy.Tenant
	// Done is called once when the exchange ends, with the HTTP status
	// the client got (0 when it went away before one).
	Done func(status int)
}

// Config configures the service.
type Config struct {
	// External judges the exchanges.
	External *proxy.External
	// Admit admits exchanges; nil serves every exchange as the External's
	// default tenant, without a key.
	Admit Admitter
	// ChunkWait is how long, in hold-back mode, the answer to a streamed
	// response body chunk may wait for the verdicts that release its text
	// (STREAMED body mode); 0 means DefaultChunkWait. Keep it well under
	// the filter's message_timeout.
	ChunkWait time.Duration
	// Log receives operational messages; nil discards them.
	Log *slog.Logger
}

// DefaultChunkWait is Config.ChunkWait's default.
const DefaultChunkWait = 100 * time.Millisecond

// Service is the ExternalProcessor gRPC service.
type Service struct {
	extprocv3.UnimplementedExternalProcessorServer
	cfg Config
}

// New checks cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.External == nil {
		return nil, errors.New("extproc: no proxy.External")
	}
	if cfg.ChunkWait < 0 {
		return nil, errors.New("extproc: negative ChunkWait")
	}
	if cfg.ChunkWait == 0 {
		cfg.ChunkWait = DefaultChunkWait
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Service{cfg: cfg}, nil
}

// MaxMessageBytes is the largest message the service reads: Envoy sends
// a BUFFERED body in one message, a whole answer up to four times the
// largest request (what the service judges; more is refused, 502), with
// room for its headers. The gRPC server must take messages this large,
// or Envoy's exchange fails (500) on a body the service would judge.
func (s *Service) MaxMessageBytes() int {
	return int(4*s.cfg.External.MaxRequestBytes()) + 1<<20
}

// Register registers the service on a gRPC server.
func (s *Service) Register(g *grpc.Server) {
	extprocv3.RegisterExternalProcessorServer(g, s)
}

func (s *Service) admit(ctx context.Context, h http.Header) (Admission, *proxy.Answer) {
	if s.cfg.Admit == nil {
		return Admission{Ctx: ctx, Tenant: s.cfg.External.DefaultTenant(), Done: func(int) {}}, nil
	}
	return s.cfg.Admit.Admit(ctx, h)
}

// Process serves one HTTP exchange: Envoy's messages in, one answer per
// message (FULL_DUPLEX_STREAMED body chunks excepted) out.
func (s *Service) Process(st extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := st.Context()
	ss := &session{svc: s, st: st, ctx: ctx,
		reqMode: filterv3.ProcessingMode_BUFFERED, respMode: filterv3.ProcessingMode_STREAMED,
		msgs: make(chan *extprocv3.ProcessingRequest, 16), arrived: make(chan struct{}, 1)}
	defer ss.close()
	errc := make(chan error, 1)
	go func() {
		defer close(ss.msgs)
		for {
			m, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case ss.msgs <- m:
			case <-ctx.Done():
				return
			}
			select {
			case ss.arrived <- struct{}{}:
			default:
			}
		}
	}()
	for {
		select {
		case m, ok := <-ss.msgs:
			if !ok {
				select {
				case err := <-errc:
					if err == io.EOF {
						return nil
					}
					return err
				default:
					return ctx.Err()
				}
			}
			if err := ss.handle(m); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// session is one exchange.
type session struct {
	svc     *Service
	st      extprocv3.ExternalProcessor_ProcessServer
	ctx     context.Context
	sendMu  sync.Mutex
	msgs    chan *extprocv3.ProcessingRequest
	arrived chan struct{}

	// The filter's configured body modes (protocol_config; without it,
	// the documented configuration is assumed).
	reqMode, respMode filterv3.ProcessingMode_BodySendMode
	// known: the modes came in protocol_config (Envoy 1.34 and later).
	known bool
	// fixedModes: the filter ignores mode overrides
	// (send_body_without_waiting_for_header_response, or a body mode
	// FULL_DUPLEX_STREAMED in either direction).
	fixedModes bool
	// askedBody: the request body was asked for by a mode override;
	// overrides: it came, so the filter honours overrides
	// (allow_mode_override), the only evidence of it the filter gives.
	askedBody, overrides bool

	// The headers messages seen: Envoy sends each once, before the body
	// and trailers they head.
	reqSeen, respSeen bool

	skip      bool // not a chat completion: everything passes
	responses bool // a Responses API request (POST …/responses)
	answered  bool // an ImmediateResponse was sent: the exchange is over
	header    http.Header
	adm       *Admission
	status    int // the HTTP status the client got, for Admission.Done

	// request body
	body   []byte
	chunks int
	call   *proxy.Call

	// response
	kind       proxy.ResponseKind
	respStatus int
	bodyMode   filterv3.ProcessingMode_BodySendMode // the body mode in effect for the response
	statusSent bool                                 // the response's headers went on before its body
	relay      *proxy.Relay
	whole      []byte
	tooLarge   bool
	respChunks int
	respDone   bool // the response's body was answered to its end
	// trailing: a whole answer came in one piece without end_of_stream
	// and was judged so (trailers follow it, or STREAMED goes on);
	// data after it is dropped.
	trailing bool
}

func (ss *session) send(r *extprocv3.ProcessingResponse) error {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	return ss.st.Send(r)
}

func (ss *session) close() {
	if ss.call != nil {
		ss.call.Close()
	}
	if ss.adm != nil {
		ss.adm.Done(ss.status)
	}
}

func (ss *session) handle(m *extprocv3.ProcessingRequest) error {
	if pc := m.GetProtocolConfig(); pc != nil {
		ss.reqMode, ss.respMode = pc.GetRequestBodyMode(), pc.GetResponseBodyMode()
		// Envoy drops every mode override while either configured body
		// mode is FULL_DUPLEX_STREAMED, as with
		// send_body_without_waiting_for_header_response.
		duplex := ss.reqMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED || ss.respMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
		ss.known, ss.fixedModes = true, pc.GetSendBodyWithoutWaitingForHeaderResponse() || duplex
	}
	if ss.answered {
		// Envoy sends nothing after an ImmediateResponse; a late message
		// gets no answer.
		return nil
	}
	switch r := m.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return ss.requestHeaders(r.RequestHeaders)
	case *extprocv3.ProcessingRequest_RequestBody:
		return ss.requestBody(r.RequestBody)
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return ss.requestTrailers()
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return ss.responseHeaders(r.ResponseHeaders)
	case *extprocv3.ProcessingRequest_ResponseBody:
		return ss.responseBody(r.ResponseBody)
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return ss.responseTrailers()
	}
	return status.Errorf(codes.InvalidArgument, "extproc: unexpected message %T", m.GetRequest())
}

// ---- request ----

func (ss *session) requestHeaders(h *extprocv3.HttpHeaders) error {
	if ss.reqSeen {
		// A second admission would hold a second connection slot of the
		// tenant's, and only the last one would be released.
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: a second request headers message on one ext_proc stream")
	}
	ss.reqSeen = true
	hdr, pseudo := headerMap(h.GetHeaders())
	switch routeOf(pseudo[":method"], pseudo[":path"]) {
	case otherRoute:
		// The filter runs on every route (a route exempted from it could
		// be reached by a spelling of the chat path): the bodies of the
		// others need not come here, nor wait in Envoy's buffer.
		// Their headers still pass here: a tenant's streamguard key must
		// not reach an upstream on any route.
		ss.skip = true
		remove, auth := proxy.PassHeaders(ss.svc.cfg.External.DefaultTenant(), hdr)
		var c *extprocv3.CommonResponse
		if mut := headerMutation(remove, auth); mut != nil {
			c = &extprocv3.CommonResponse{HeaderMutation: mut}
		}
		return ss.send(headersResponse(true, c, ss.mode(filterv3.ProcessingMode_NONE, filterv3.ProcessingMode_NONE)))
	case legacyRoute:
		// The upstream would generate text the guard does not parse:
		// refused rather than passed unjudged.
		return ss.refuse(http.StatusForbidden, "invalid_request_error", "unsupported_endpoint",
			"streamguard: the legacy completions API (POST /v1/completions) is not judged by the guard and is refused; use POST /v1/chat/completions")
	case mixedRoute:
		return ss.refuse(http.StatusForbidden, "invalid_request_error", "unsupported_endpoint",
			"streamguard: a path that upstreams may read as another API than streamguard does (either the chat-completions or the Responses API, or a control character in it) is refused; send the request to one of them")
	case storedRoute:
		return ss.refuse(http.StatusForbidden, "invalid_request_error", "unsupported_endpoint",
			"streamguard: stored answers (…/responses/{id}, …/chat/completions/{id} and their lists) would be read past the guard and are refused; keep the answers you get as they stream")
	case respRoute:
		ss.responses = true
	}
	ss.header = hdr
	adm, ans := ss.svc.admit(ss.ctx, hdr)
	if ans != nil {
		return ss.immediate(ans)
	}
	ss.adm = &adm
	mut := headerMutation(proxy.UpstreamHeaders(adm.Tenant, hdr))
	if h.GetEndOfStream() {
		// No body: nothing to judge, and a chat request needs one.
		return ss.judgeRequest()
	}
	var override *filterv3.ProcessingMode
	if ss.reqMode == filterv3.ProcessingMode_NONE {
		if ss.fixedModes {
			// The filter ignores overrides: the prompt would go upstream
			// unjudged.
			return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
				"streamguard: the ext_proc filter sends no request body (request_body_mode NONE) and ignores mode overrides (send_body_without_waiting_for_header_response): configure request_body_mode BUFFERED")
		}
		// The filter would not send the body: ask for it (honoured where
		// the filter allows mode overrides; without it the response is
		// refused, as the prompt was never judged).
		ss.reqMode = filterv3.ProcessingMode_BUFFERED
		ss.askedBody = true
		override = ss.mode(filterv3.ProcessingMode_BUFFERED, ss.respMode)
	}
	return ss.send(headersResponse(true, &extprocv3.CommonResponse{HeaderMutation: mut}, override))
}

// mode is a processing mode override: the body modes given, the response
// headers sent, trailers sent where FULL_DUPLEX_STREAMED needs them.
func (ss *session) mode(req, resp filterv3.ProcessingMode_BodySendMode) *filterv3.ProcessingMode {
	m := &filterv3.ProcessingMode{RequestBodyMode: req, ResponseBodyMode: resp,
		ResponseHeaderMode: filterv3.ProcessingMode_SEND}
	if req == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		m.RequestTrailerMode = filterv3.ProcessingMode_SEND
	}
	if resp == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
		m.ResponseTrailerMode = filterv3.ProcessingMode_SEND
	}
	return m
}

func (ss *session) requestBody(b *extprocv3.HttpBody) error {
	if !ss.reqSeen {
		return ss.noRequestHeaders()
	}
	// A body that came after it was asked for: the filter honours
	// overrides.
	ss.overrides = ss.overrides || ss.askedBody
	duplex := ss.reqMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	if ss.skip || ss.call != nil {
		return ss.send(passBody(true, duplex, b))
	}
	if max := ss.svc.cfg.External.MaxRequestBytes(); int64(len(ss.body)+len(b.GetBody())) > max {
		// Too large: Start refuses it (413) on its length alone.
		ss.body = append(ss.body, b.GetBody()[:max+1-int64(len(ss.body))]...)
		return ss.judgeRequest()
	}
	ss.body = append(ss.body, b.GetBody()...)
	ss.chunks++
	if b.GetEndOfStream() || ss.reqMode == filterv3.ProcessingMode_BUFFERED && (ss.known || ss.askedBody) {
		// BUFFERED (known from protocol_config, or asked for and come):
		// Envoy sends the body once, whole, without end_of_stream when
		// trailers follow it.
		return ss.judgeRequest()
	}
	switch ss.reqMode {
	case filterv3.ProcessingMode_BUFFERED_PARTIAL:
		// Envoy sends only what fits its buffer: the prompt cannot be
		// judged whole.
		return ss.refuse(http.StatusRequestEntityTooLarge, "invalid_request_error", "bad_request",
			"streamguard: the request body is larger than the gateway's buffer (BUFFERED_PARTIAL): it cannot be judged whole")
	case filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return nil // answered once the body is whole
	}
	// STREAMED: the chunk is held back from the upstream until the prompt
	// is judged; the whole body goes with the last chunk's answer.
	return ss.send(bodyResponse(true, &extprocv3.CommonResponse{BodyMutation: clearBody()}))
}

// noRequestHeaders refuses a request body or trailers that came without
// the request headers (request_header_mode SKIP, or a client speaking
// ext_proc on its own): nothing says what the request is or who sent it.
func (ss *session) noRequestHeaders() error {
	return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
		"streamguard: the request's body or trailers came without its headers: configure the ext_proc filter with request_header_mode SEND")
}

func (ss *session) requestTrailers() error {
	if !ss.reqSeen {
		return ss.noRequestHeaders()
	}
	if ss.skip || ss.call != nil {
		return ss.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}})
	}
	// The body ended with trailers, so its chunks were answered before
	// the prompt could be judged: refuse rather than guess.
	return ss.refuse(http.StatusBadRequest, "invalid_request_error", "bad_request",
		"streamguard: a chat-completions request with trailers cannot be judged")
}

// judgeRequest judges the gathered body and answers its last message.
func (ss *session) judgeRequest() error {
	start := ss.svc.cfg.External.Start
	if ss.responses {
		start = ss.svc.cfg.External.StartResponses
	}
	call, ans := start(ss.adm.Ctx, ss.adm.Tenant, ss.header, ss.body)
	ss.call = call
	if ans != nil {
		return ss.immediate(ans)
	}
	body := ss.body
	ss.body = nil
	switch {
	case ss.reqMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED:
		return ss.send(bodyResponse(true, &extprocv3.CommonResponse{BodyMutation: streamed(body, true)}))
	case ss.chunks > 1:
		// The earlier chunks were held back: the whole body goes now.
		return ss.send(bodyResponse(true, &extprocv3.CommonResponse{BodyMutation: replaceBody(body)}))
	case ss.chunks == 0:
		// The request headers ended the request (an empty body is
		// refused above, so this is not reached).
		return ss.send(headersResponse(true, nil, nil))
	}
	return ss.send(bodyResponse(true, nil))
}

// ---- response ----

func (ss *session) responseHeaders(h *extprocv3.HttpHeaders) error {
	if ss.respSeen {
		// A second relay would be started, and the first never closed.
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: a second response headers message on one ext_proc stream")
	}
	ss.respSeen = true
	if ss.skip {
		return ss.send(headersResponse(false, nil, nil))
	}
	if !ss.reqSeen {
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: a response came without its request's headers: configure the ext_proc filter with request_header_mode SEND")
	}
	if ss.call == nil {
		// The prompt was never judged (the filter sent no request body):
		// nothing of the answer may go out.
		return ss.refuse(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: the request body never reached the guard: configure the ext_proc filter with request_body_mode BUFFERED")
	}
	hdr, pseudo := headerMap(h.GetHeaders())
	code, err := strconv.Atoi(pseudo[":status"])
	if err != nil || code < 100 || code > 599 {
		// Not an HTTP status: judged as an answer would be, the most
		// careful reading, and never a number a client chose reaching the
		// metrics' labels.
		code = http.StatusOK
	}
	ss.respStatus, ss.status = code, code
	kind, set := ss.call.Response(code, hdr)
	if kind == proxy.RefusedResponse {
		return ss.immediate(ss.call.Refusal())
	}
	ss.kind = kind
	if kind != proxy.PassResponse && ss.respMode == filterv3.ProcessingMode_NONE && (!ss.overrides || ss.fixedModes) {
		// The filter would not send the body, and nothing says it honours
		// the override that asks for it: the answer would go out
		// unjudged. The headers are still held: refuse now.
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: the ext_proc filter sends no response body (response_body_mode NONE): the answer cannot be judged; configure response_body_mode STREAMED")
	}
	mut := &extprocv3.HeaderMutation{}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		mut.SetHeaders = append(mut.SetHeaders, headerOption(strings.ToLower(k), set.Get(k)))
	}
	ss.bodyMode = ss.respMode
	var want filterv3.ProcessingMode_BodySendMode
	switch kind {
	case proxy.PassResponse:
		want = filterv3.ProcessingMode_NONE
	case proxy.StreamResponse:
		want = filterv3.ProcessingMode_STREAMED
		if ss.respMode != filterv3.ProcessingMode_NONE {
			// Kept as configured. BUFFERED_PARTIAL above all: were an
			// override to STREAMED not honoured, its partial buffer would
			// look like a STREAMED chunk, and what follows it would pass
			// unjudged; kept, a chunk without end_of_stream is refused
			// (responseBody).
			want = ss.respMode
		}
		mut.RemoveHeaders = append(mut.RemoveHeaders, "content-length")
	case proxy.WholeResponse:
		want = filterv3.ProcessingMode_BUFFERED
		switch ss.respMode {
		case filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, filterv3.ProcessingMode_BUFFERED_PARTIAL:
			// Not overridden: FULL_DUPLEX_STREAMED cannot be, and
			// BUFFERED_PARTIAL is kept as above.
			want = ss.respMode
		}
	}
	var override *filterv3.ProcessingMode
	if want != ss.respMode || !ss.known {
		// Without protocol_config the configured mode is a guess: the
		// override pins it where the filter honours overrides.
		override = ss.mode(filterv3.ProcessingMode_NONE, want)
		if kind != proxy.PassResponse && !ss.fixedModes {
			// Assumed honoured (allow_mode_override); a chunk without
			// end_of_stream says otherwise (responseBody).
			ss.bodyMode = want
		}
	}
	ss.statusSent = !buffered(ss.bodyMode)
	if kind == proxy.StreamResponse {
		if ss.bodyMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED {
			var rl *proxy.Relay
			rl = ss.call.Stream(func() {
				if b := rl.Take(); len(b) > 0 {
					// A failed send means the stream is gone: the context
					// ends the relay.
					_ = ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: streamed(b, false)}))
				}
			})
			ss.relay = rl
		} else {
			ss.relay = ss.call.Stream(nil)
		}
	}
	if h.GetEndOfStream() {
		// No body: nothing to judge or release.
		ss.respDone = true
	}
	return ss.send(headersResponse(false, &extprocv3.CommonResponse{HeaderMutation: mut}, override))
}

// buffered reports whether Envoy holds the response's headers until its
// body (or as much of it as fits its buffer) was answered.
func buffered(m filterv3.ProcessingMode_BodySendMode) bool {
	return m == filterv3.ProcessingMode_BUFFERED || m == filterv3.ProcessingMode_BUFFERED_PARTIAL
}

func (ss *session) responseBody(b *extprocv3.HttpBody) error {
	pass := passBody(false, ss.respMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED, b)
	switch {
	case ss.skip:
		return ss.send(pass)
	case !ss.reqSeen || ss.call == nil:
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: a response body came for a request that was never judged: configure the ext_proc filter with request_header_mode SEND and request_body_mode BUFFERED")
	case !ss.respSeen:
		// The kind of the response is unknown, so is how to judge it
		// (response_header_mode SKIP, the override asking SEND not
		// honoured): nothing of it may go out.
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: the response's body came without its headers: configure the ext_proc filter with response_header_mode SEND")
	case ss.trailing && len(bytes.TrimSpace(b.GetBody())) > 0:
		// Data after an answer judged whole: not judged, not passed.
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: clearBody()}))
	case ss.kind == proxy.PassResponse || ss.respDone:
		return ss.send(pass)
	}
	if !b.GetEndOfStream() && ss.bodyMode == filterv3.ProcessingMode_BUFFERED && ss.known && ss.respMode == filterv3.ProcessingMode_BUFFERED {
		// BUFFERED for certain (configured so: an override taken for the
		// request body says nothing of one for the response): the body
		// is whole, and trailers follow it.
		b = &extprocv3.HttpBody{Body: b.GetBody(), EndOfStream: true}
	}
	if !b.GetEndOfStream() && buffered(ss.bodyMode) {
		switch {
		case ss.bodyMode == filterv3.ProcessingMode_BUFFERED_PARTIAL:
			// Envoy's buffer is full: once this is answered, the rest of
			// the answer goes to the client without coming here. The
			// headers are still held.
			return ss.refuseWarn(http.StatusBadGateway, "upstream_error", "upstream_too_large",
				"streamguard: the answer is larger than the gateway's buffer (response_body_mode BUFFERED_PARTIAL): it cannot be judged whole; configure response_body_mode STREAMED")
		case !ss.known || ss.respMode != filterv3.ProcessingMode_STREAMED:
			// Asked for whole, it comes in pieces, in a mode the filter
			// does not say (no protocol_config): it may be
			// BUFFERED_PARTIAL's partial buffer.
			return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
				"streamguard: the answer came in pieces though it was asked for whole (BUFFERED), and the gateway does not say its response_body_mode (protocol_config, Envoy 1.34 and later): configure response_body_mode STREAMED with allow_mode_override true")
		}
		// The override to BUFFERED was not honoured (the configured
		// STREAMED mode is in effect, and the headers went on), or it was
		// and trailers follow the whole body: nothing tells which.
		ss.bodyMode, ss.statusSent = filterv3.ProcessingMode_STREAMED, true
		if ss.kind == proxy.WholeResponse && ss.respChunks == 0 && json.Valid(b.GetBody()) {
			// A whole answer in one piece: judged now, in the form that
			// holds either way (the status kept, its length given for a
			// BUFFERED exchange); nothing after it may go out.
			ss.trailing = true
			b = &extprocv3.HttpBody{Body: b.GetBody(), EndOfStream: true}
		}
	}
	ss.respChunks++
	if ss.kind == proxy.StreamResponse {
		return ss.streamChunk(b)
	}
	return ss.wholeChunk(b)
}

func (ss *session) streamChunk(b *extprocv3.HttpBody) error {
	rl := ss.relay
	duplex := ss.bodyMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	rl.Push(b.GetBody())
	if b.GetEndOfStream() {
		rl.End()
		select {
		case <-rl.Done():
		case <-ss.ctx.Done():
			return ss.ctx.Err()
		}
		ss.respDone = true
		out := rl.Take()
		if duplex {
			return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: streamed(out, true)}))
		}
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: replaceBody(out)}))
	}
	if duplex {
		return nil // released text goes out as it is released
	}
	wait := ss.svc.cfg.ChunkWait
	if ss.adm.Tenant.Mode == proxy.PassThrough {
		wait = 0
	}
	select {
	case <-ss.arrived:
	default:
	}
	if len(ss.msgs) > 0 {
		wait = 0 // the next chunk is here: answer with what is released now
	}
	rl.Sync(wait, ss.arrived)
	return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: replaceBody(rl.Take())}))
}

func (ss *session) wholeChunk(b *extprocv3.HttpBody) error {
	duplex := ss.bodyMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	limit := 4 * ss.svc.cfg.External.MaxRequestBytes()
	if !ss.tooLarge {
		ss.whole = append(ss.whole, b.GetBody()...)
		if int64(len(ss.whole)) > limit {
			ss.whole = ss.whole[:limit+1] // Whole answers 502 on the length
			ss.tooLarge = true
		}
	}
	if !b.GetEndOfStream() {
		if duplex {
			return nil
		}
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: clearBody()}))
	}
	ss.respDone = true
	ans := ss.call.Whole(ss.respStatus, ss.whole, ss.statusSent)
	body := ss.whole
	ss.whole = nil
	if ans != nil {
		body = ans.Body
	}
	switch {
	case duplex:
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: streamed(body, true)}))
	case ans != nil && !ss.statusSent:
		// BUFFERED: the headers are still held, so the status can change.
		ss.status = ans.Status
		mut := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{headerOption(":status", strconv.Itoa(ans.Status))}}
		for _, k := range slices.Sorted(maps.Keys(ans.Header)) {
			if k != "Content-Length" && !strings.HasPrefix(k, "X-Streamguard-") {
				mut.SetHeaders = append(mut.SetHeaders, headerOption(strings.ToLower(k), ans.Header.Get(k)))
			}
		}
		if ss.bodyMode == filterv3.ProcessingMode_BUFFERED {
			// BUFFERED_PARTIAL: Envoy removes Content-Length itself.
			mut.SetHeaders = append(mut.SetHeaders, headerOption("content-length", strconv.Itoa(len(body))))
		}
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{HeaderMutation: mut, BodyMutation: replaceBody(body)}))
	case ans != nil && ss.trailing:
		// BUFFERED with trailers, or STREAMED: a header mutation counts
		// only in the former, where Envoy checks Content-Length against
		// the new body.
		mut := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{headerOption("content-length", strconv.Itoa(len(body)))}}
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{HeaderMutation: mut, BodyMutation: replaceBody(body)}))
	case ans != nil || ss.respChunks > 1:
		return ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: replaceBody(body)}))
	}
	return ss.send(bodyResponse(false, nil))
}

func (ss *session) responseTrailers() error {
	trailers := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	switch {
	case ss.skip:
		return ss.send(trailers)
	case !ss.reqSeen || ss.call == nil || !ss.respSeen:
		// The body, if any, was not judged.
		return ss.refuseWarn(http.StatusInternalServerError, "server_error", "guard_unavailable",
			"streamguard: response trailers came without the messages before them: configure the ext_proc filter with request_header_mode SEND and response_header_mode SEND")
	case ss.kind == proxy.PassResponse || ss.respDone:
		return ss.send(trailers)
	}
	// The body ended with trailers instead of end_of_stream.
	ss.respDone = true
	duplex := ss.bodyMode == filterv3.ProcessingMode_FULL_DUPLEX_STREAMED
	var out []byte
	if ss.kind == proxy.StreamResponse {
		ss.relay.End()
		select {
		case <-ss.relay.Done():
		case <-ss.ctx.Done():
			return ss.ctx.Err()
		}
		out = ss.relay.Take()
	} else {
		out = ss.whole
		if ans := ss.call.Whole(ss.respStatus, ss.whole, true); ans != nil {
			out = ans.Body
		}
	}
	if duplex && len(out) > 0 {
		if err := ss.send(bodyResponse(false, &extprocv3.CommonResponse{BodyMutation: streamed(out, false)})); err != nil {
			return err
		}
	} else if len(out) > 0 {
		// Every chunk was answered already: what was held cannot be sent.
		ss.svc.cfg.Log.Warn("ext_proc: response trailers ended the body; held text dropped", "request_id", ss.call.ID(), "bytes", len(out))
	}
	return ss.send(trailers)
}

// ---- answers ----

// refuse answers with an OpenAI error of the service's own.
func (ss *session) refuse(code int, typ, short, msg string) error {
	body := fmt.Appendf(nil, `{"error":{"message":%q,"type":%q,"param":null,"code":%q}}`, msg, typ, short)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if ss.call != nil {
		h.Set("X-Streamguard-Request-Id", ss.call.ID())
	}
	return ss.immediate(&proxy.Answer{Status: code, Header: h, Body: body})
}

// refuseWarn refuses as refuse does, for a reason the gateway's operator
// has to fix (the filter's configuration), and logs it.
func (ss *session) refuseWarn(code int, typ, short, msg string) error {
	id := ""
	if ss.call != nil {
		id = ss.call.ID()
	}
	ss.svc.cfg.Log.Warn("ext_proc: exchange refused", "status", code, "reason", msg, "request_id", id)
	return ss.refuse(code, typ, short, msg)
}

// immediate sends the client an answer of streamguard's instead of the
// upstream's.
func (ss *session) immediate(a *proxy.Answer) error {
	ss.answered = true
	ss.status = a.Status
	mut := &extprocv3.HeaderMutation{}
	for _, k := range slices.Sorted(maps.Keys(a.Header)) {
		if k == "Content-Length" {
			continue
		}
		mut.SetHeaders = append(mut.SetHeaders, headerOption(strings.ToLower(k), strings.Join(a.Header.Values(k), ", ")))
	}
	return ss.send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{
		ImmediateResponse: &extprocv3.ImmediateResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode(a.Status)},
			Headers: mut,
			Body:    a.Body,
			Details: "streamguard",
		}}})
}

func headersResponse(request bool, c *extprocv3.CommonResponse, override *filterv3.ProcessingMode) *extprocv3.ProcessingResponse {
	hr := &extprocv3.HeadersResponse{Response: c}
	r := &extprocv3.ProcessingResponse{ModeOverride: override}
	if request {
		r.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}
	} else {
		r.Response = &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: hr}
	}
	return r
}

func bodyResponse(request bool, c *extprocv3.CommonResponse) *extprocv3.ProcessingResponse {
	br := &extprocv3.BodyResponse{Response: c}
	if request {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: br}}
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: br}}
}

// passBody lets a body chunk through unchanged.
func passBody(request, duplex bool, b *extprocv3.HttpBody) *extprocv3.ProcessingResponse {
	if duplex {
		return bodyResponse(request, &extprocv3.CommonResponse{BodyMutation: streamed(b.GetBody(), b.GetEndOfStream())})
	}
	return bodyResponse(request, nil)
}

func replaceBody(b []byte) *extprocv3.BodyMutation {
	if len(b) == 0 {
		return clearBody()
	}
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_Body{Body: b}}
}

func clearBody() *extprocv3.BodyMutation {
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_ClearBody{ClearBody: true}}
}

func streamed(b []byte, end bool) *extprocv3.BodyMutation {
	return &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
		StreamedResponse: &extprocv3.StreamedBodyResponse{Body: b, EndOfStream: end}}}
}

// headerMutation removes the headers remove names and sets Authorization
// to authorization when it is not empty; nil when it changes nothing.
func headerMutation(remove []string, authorization string) *extprocv3.HeaderMutation {
	if len(remove) == 0 && authorization == "" {
		return nil
	}
	mut := &extprocv3.HeaderMutation{}
	for _, k := range remove {
		mut.RemoveHeaders = append(mut.RemoveHeaders, strings.ToLower(k))
	}
	if authorization != "" {
		mut.SetHeaders = append(mut.SetHeaders, headerOption("authorization", authorization))
	}
	return mut
}

func headerOption(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, RawValue: []byte(v)},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}
}

// headerMap converts Envoy's headers: the regular ones to an http.Header,
// the pseudo-headers (":method", ":path", ":status", ...) apart.
func headerMap(m *corev3.HeaderMap) (http.Header, map[string]string) {
	h := http.Header{}
	pseudo := map[string]string{}
	for _, hv := range m.GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		if strings.HasPrefix(hv.GetKey(), ":") {
			pseudo[hv.GetKey()] = v
			continue
		}
		h.Add(hv.GetKey(), v)
	}
	return h, pseudo
}
