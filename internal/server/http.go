package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/jsonkeys"
	"github.com/streamguard/streamguard/internal/playground"
)

// routes registers every endpoint.
func (srv *Server) routes() {
	mux := http.NewServeMux()
	srv.mux = mux
	mux.HandleFunc("GET /healthz", srv.healthz)
	mux.HandleFunc("GET /readyz", srv.readyz)
	mux.HandleFunc("GET /metrics", srv.serveMetrics)
	mux.Handle("GET /v1/info", srv.authed("info", srv.serveInfo))
	mux.Handle("GET /v1/models", srv.authed("models", srv.listModels))
	mux.Handle("GET /v1/models/{model}", srv.authed("models", srv.getModel))
	mux.Handle("POST /v1/moderations", srv.authed("moderations", srv.moderations))
	mux.Handle("POST /v1/streams", srv.authed("streams.create", srv.openingStream(srv.createStream)))
	mux.Handle("GET /v1/streams/{id}", srv.authed("streams.get", srv.onStream(srv.getStream)))
	mux.Handle("POST /v1/streams/{id}/append", srv.authed("streams.append", srv.onStream(srv.appendStream)))
	mux.Handle("POST /v1/streams/{id}/flush", srv.authed("streams.flush", srv.onStream(srv.flushStream)))
	mux.Handle("POST /v1/streams/{id}/prompt", srv.authed("streams.prompt", srv.onStream(srv.promptStream)))
	mux.Handle("DELETE /v1/streams/{id}", srv.authed("streams.close", srv.onStream(srv.closeStream)))
	mux.Handle("POST /v1/streams/connect", srv.authedDuplex("streams.connect", srv.connect))
	mux.Handle("POST /beta/litellm_basic_guardrail_api", srv.authed("litellm", srv.litellm))
	if srv.opts.Playground {
		playground.Register(mux)
	}
}

// crossSite is the check against requests that a web page of another
// origin makes a browser send (a form or a text/plain POST needs no
// preflight, and a server without tenants has no key to stop it): ok is
// false when the browser says the request is cross-site (Sec-Fetch-Site)
// or sends an Origin whose host is not the request's. Clients that are not
// browsers send neither header and are not affected. A link to the
// playground's page from another site is followed: a navigation to it
// changes nothing and shows the other site nothing.
func crossSite(r *http.Request) (origin string, ok bool) {
	origin = r.Header.Get("Origin")
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		page := r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			r.Header.Get("Sec-Fetch-Mode") == "navigate" && r.Header.Get("Sec-Fetch-Dest") == "document"
		return origin, page
	}
	if origin == "" {
		return "", true
	}
	u, err := url.Parse(origin)
	return origin, err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

// ServeHTTP serves the routes; a path no route has answers 404 and a
// method the path's routes do not take answers 405 (with Allow), both in
// OpenAI's error shape rather than net/http's plain text.
func (srv *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if srv.opts.ReplicaID != "" {
		w.Header().Set(ReplicaHeader, srv.opts.ReplicaID)
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if origin, ok := crossSite(r); !ok {
		srv.metrics.request("-", "cross_site", http.StatusForbidden)
		writeErr(w, http.StatusForbidden, "invalid_request_error", "cross_site_request",
			fmt.Sprintf("streamguard does not answer a web page of another origin (%s); call it from a server, or from the playground it serves", origin))
		return
	}
	// Liveness and readiness answer any Host: they say nothing a page
	// could use, and balancers probe them by a name of their own (Envoy
	// sends its cluster's).
	probe := r.URL.Path == "/healthz" || r.URL.Path == "/readyz"
	if srv.opts.CheckHost && !probe && !hostAllowed(r.Host, srv.opts.AllowedHosts) {
		srv.metrics.request("-", "host_not_allowed", http.StatusForbidden)
		writeErr(w, http.StatusForbidden, "invalid_request_error", "host_not_allowed",
			fmt.Sprintf("streamguard does not answer requests for host %q: this server answers only an IP address, localhost or the names it is given (streamguard serve --allowed-hosts), so that no web page can reach it by re-pointing its own name at it (DNS rebinding)", r.Host))
		return
	}
	h, pattern := srv.mux.Handler(r)
	if pattern != "" {
		srv.mux.ServeHTTP(w, r)
		return
	}
	// No route: the mux's own handler says 404, 405 (setting Allow) or
	// redirects (a path to clean); only the error statuses are rewritten.
	c := &capture{h: http.Header{}}
	h.ServeHTTP(c, r)
	switch c.code {
	case http.StatusNotFound:
		srv.metrics.request("-", "unknown", http.StatusNotFound)
		msg := fmt.Sprintf("unknown route: %s %s", r.Method, r.URL.Path)
		switch p := r.URL.Path; {
		case p == "/v1/chat/completions" || p == "/v1/responses":
			msg = "the proxy is not enabled on this server: start it with `streamguard serve --upstream URL` (an OpenAI-compatible base URL) to serve POST /v1/chat/completions and POST /v1/responses"
		case strings.HasPrefix(p, "/v1/responses/") || p == "/v1/completions":
			// An SDK user's first try: say what the proxy does serve
			// rather than only that this route is unknown.
			msg = fmt.Sprintf("streamguard does not proxy %s: it moderates POST /v1/chat/completions and POST /v1/responses (a stored response is fetched past the guard), and /v1/moderations judges text from any API", p)
		}
		writeErr(w, http.StatusNotFound, "invalid_request_error", "not_found", msg)
	case http.StatusMethodNotAllowed:
		srv.metrics.request("-", "unknown", http.StatusMethodNotAllowed)
		allow := c.h.Get("Allow")
		w.Header().Set("Allow", allow)
		writeErr(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed",
			fmt.Sprintf("method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
	default:
		for k, v := range c.h {
			w.Header()[k] = v
		}
		w.WriteHeader(c.code)
		_, _ = w.Write(c.body.Bytes())
	}
}

// capture records what the mux's fallback handler answers.
type capture struct {
	h    http.Header
	code int
	body bytes.Buffer
}

func (c *capture) Header() http.Header { return c.h }
func (c *capture) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}
func (c *capture) Write(b []byte) (int, error) {
	if c.code == 0 {
		c.code = http.StatusOK
	}
	return c.body.Write(b)
}

// statusWriter records the status and whether writing failed.
type statusWriter struct {
	http.ResponseWriter
	code    int
	failed  bool
	written bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.written {
		w.code, w.written = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.code, w.written = http.StatusOK, true
	}
	n, err := w.ResponseWriter.Write(b)
	if err != nil {
		w.failed = true
	}
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type tenantHandler func(w http.ResponseWriter, r *http.Request, t *Tenant)

// How wrap treats a route.
type routeKind int

const (
	// unary requests are counted as work, their bodies bounded by
	// MaxBodyBytes and their time by RequestTimeout.
	unary routeKind = iota
	// duplex connections count, bound and time each operation themselves.
	duplexRoute
	// mounted handlers (the proxy) are counted as work and bound their
	// own bodies and times: a streamed completion lasts as long as the
	// upstream generates.
	mounted
)

// authed authenticates, applies the tenant's rate limit, bounds the body
// and the time, and counts the request.
func (srv *Server) authed(route string, h tenantHandler) http.Handler {
	return srv.wrap(route, unary, h)
}

// authedDuplex is authed for the long-lived connection.
func (srv *Server) authedDuplex(route string, h tenantHandler) http.Handler {
	return srv.wrap(route, duplexRoute, h)
}

func (srv *Server) wrap(route string, kind routeKind, h tenantHandler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// Answers are written under a deadline: a client that stops
		// reading would otherwise hold the handler, its stream and its
		// KV charge for good. A unary answer must be taken within the
		// request timeout plus the body's idle allowance of the
		// request's start; duplex connections set one per reply; the
		// proxy sets its own (none is set here for them).
		wdl := time.Time{}
		if kind == unary {
			wdl = start.Add(srv.opts.RequestTimeout + srv.opts.BodyIdleTimeout)
		}
		_ = http.NewResponseController(rw).SetWriteDeadline(wdl)
		countWork := kind != duplexRoute
		w := &statusWriter{ResponseWriter: rw}
		// The id the OpenAI SDKs show (response._request_id,
		// APIError.request_id); a moderation's id and its inputs' audit
		// records carry it (requestID). A mounted proxy sets its own.
		id := newRequestID()
		w.Header().Set("X-Request-Id", id)
		r = r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
		tenantName := "-"
		if countWork {
			srv.metrics.accepted.Add(1)
		}
		defer func() {
			if countWork && !w.failed {
				srv.metrics.answered.Add(1)
			}
			srv.metrics.request(tenantName, route, w.code)
		}()
		t := srv.tenants.authenticate(apiKey(r))
		if t == nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="streamguard"`)
			writeErr(w, http.StatusUnauthorized, "authentication_error", "invalid_api_key", "missing or unknown API key (Authorization: Bearer KEY, or x-api-key: KEY)")
			return
		}
		tenantName = t.Name
		if !t.acquireConn() {
			srv.metrics.rejected("tenant_connections")
			setRetryAfter(w, srv.opts.RetryAfter)
			w.Header().Set("Connection", "close")
			writeErr(w, http.StatusTooManyRequests, "rate_limit_error", "connection_limit",
				fmt.Sprintf("the tenant's connection limit (%d requests in progress or duplex connections) is reached", t.MaxConns))
			return
		}
		defer t.releaseConn()
		if ok, wait := t.limiter.allow(time.Now()); !ok {
			srv.metrics.rejected("rate_limit")
			setRetryAfter(w, wait)
			writeErr(w, http.StatusTooManyRequests, "rate_limit_error", "rate_limit", "the tenant's request rate limit is exceeded")
			return
		}
		if kind == duplexRoute {
			h(w, r, t)
			return
		}
		// The body is read under deadlines (between bytes, and in all
		// within the request timeout, which covers the body read too). A
		// unary request's judging is bounded by the request timeout; a
		// mounted handler's answer is not (a streamed completion lasts
		// as long as the upstream generates, under the proxy's own
		// upstream timeouts).
		if kind == unary {
			ctx, cancel := context.WithTimeout(r.Context(), srv.opts.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		if r.Body == nil || r.Body == http.NoBody {
			h(w, r, t)
			return
		}
		tb := &timedBody{r: r.Body, rc: http.NewResponseController(w), between: srv.opts.BodyIdleTimeout,
			end: start.Add(srv.opts.RequestTimeout), cut: srv.cutCtx}
		stopCut := context.AfterFunc(srv.cutCtx, tb.cutNow)
		defer stopCut()
		r.Body = http.MaxBytesReader(w, tb, srv.opts.MaxBodyBytes)
		if kind == unary {
			// Read it all before the handler: a slow body is cut here,
			// before any stream is opened, and is not counted as work.
			body, err := io.ReadAll(r.Body)
			if err != nil {
				var mbe *http.MaxBytesError
				if !errors.As(err, &mbe) {
					if countWork {
						countWork = false
						srv.metrics.accepted.Add(-1)
					}
					srv.metrics.rejected("slow_body")
					w.Header().Set("Connection", "close")
					if tb.timeout == nil {
						// The client went away mid-body.
						writeErr(w, http.StatusBadRequest, "invalid_request_error", "invalid_request", "the request body ended early: "+err.Error())
						return
					}
					err = tb.timeout
				}
				srv.writeError(w, err)
				return
			}
			stopCut()
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
		h(w, r, t)
	})
}

// apiKey reads "Authorization: Bearer KEY" or "x-api-key: KEY".
func apiKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		// The scheme is case-insensitive (RFC 9110 §11.1).
		scheme, k, ok := strings.Cut(strings.TrimSpace(a), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return ""
		}
		return strings.TrimSpace(k)
	}
	return strings.TrimSpace(r.Header.Get("x-api-key"))
}

func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(d.Seconds())))))
}

// apiError is the body of every error response (OpenAI's shape).
type apiError struct {
	Error apiErrorBody `json:"error"`
}

type apiErrorBody struct {
	Message string `json:"message"`
	Type    string `json:"type"`
	// Param names the request field at fault, when one is (OpenAI's
	// param; null otherwise).
	Param *string `json:"param"`
	Code  string  `json:"code"`
	// StreamEnded is true when the stream can no longer be used.
	StreamEnded bool `json:"stream_ended,omitempty"`
	// RetryAfter is the advised wait in seconds, for 429 and 503.
	RetryAfter int `json:"retry_after,omitempty"`
}

// paramError names the request field an error is about.
type paramError struct {
	param string
	err   error
}

func (e paramError) Error() string { return e.err.Error() }
func (e paramError) Unwrap() error { return e.err }

// lengthParam names the request field whose input was too long, when err
// is a context length error.
func lengthParam(err error, param string) error {
	if err == nil || !errors.Is(err, guard.ErrContextLength) {
		return err
	}
	return paramError{param, err}
}

func writeErr(w http.ResponseWriter, code int, typ, short, msg string) {
	writeJSON(w, code, apiError{apiErrorBody{Message: msg, Type: typ, Code: short}})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v) // a failed write is seen by statusWriter
}

// errorStatus maps an operation's error to a status and error body.
func (srv *Server) errorStatus(err error) (int, apiErrorBody, time.Duration) {
	var mbe *http.MaxBytesError
	var br badRequest
	var se streamEnded
	var pe paramError
	ended := errors.As(err, &se)
	b := apiErrorBody{Message: err.Error(), StreamEnded: ended}
	if errors.As(err, &pe) {
		b.Param = &pe.param
	}
	switch {
	case errors.Is(err, guard.ErrContextLength): // the server's own limit (tooLong) matches it too
		// The client's input is too long: its error whatever the load,
		// never an overload or a guard failure.
		b.Type, b.Code = "invalid_request_error", "context_length_exceeded"
		return http.StatusBadRequest, b, 0
	case errors.Is(err, errBodyTimeout):
		b.Type, b.Code = "invalid_request_error", "request_timeout"
		return http.StatusRequestTimeout, b, 0
	case errors.Is(err, ErrBudget):
		b.Type, b.Code = "overloaded_error", "kv_budget"
		return http.StatusTooManyRequests, b, srv.opts.RetryAfter
	case errors.Is(err, ErrTooManyStreams):
		b.Type, b.Code = "rate_limit_error", "stream_limit"
		return http.StatusTooManyRequests, b, srv.opts.RetryAfter
	case errors.Is(err, ErrShuttingDown):
		b.Type, b.Code = "overloaded_error", "shutting_down"
		return http.StatusServiceUnavailable, b, srv.opts.RetryAfter
	case errors.As(err, &mbe):
		b.Type, b.Code = "invalid_request_error", "body_too_large"
		b.Message = fmt.Sprintf("request body larger than %d bytes", mbe.Limit)
		return http.StatusRequestEntityTooLarge, b, 0
	case errors.Is(err, context.DeadlineExceeded):
		b.Type, b.Code = "timeout_error", "timeout"
		return http.StatusGatewayTimeout, b, 0
	case errors.Is(err, context.Canceled):
		b.Type, b.Code = "timeout_error", "cancelled"
		return http.StatusServiceUnavailable, b, 0
	case errors.Is(err, errStreamExists):
		b.Type, b.Code = "invalid_request_error", "stream_exists"
		return http.StatusConflict, b, 0
	case errors.Is(err, ErrStreamClosed):
		b.Type, b.Code = "invalid_request_error", "stream_closed"
		b.StreamEnded = true
		return http.StatusConflict, b, 0
	case errors.As(err, &br):
		b.Type, b.Code = "invalid_request_error", "invalid_request"
		return http.StatusBadRequest, b, 0
	case errors.Is(err, guard.ErrNonFinite):
		// Damaged weights: nothing was judged, and the stream is closed.
		b.Type, b.Code = "server_error", "model_output_invalid"
		b.StreamEnded = true
		return http.StatusInternalServerError, b, 0
	}
	b.Type, b.Code = "server_error", "internal"
	return http.StatusInternalServerError, b, 0
}

// writeError answers err in OpenAI's error shape, with its status.
func (srv *Server) writeError(w http.ResponseWriter, err error) { srv.writeErrorWith(w, err, nil, nil) }

// writeErrorWith is writeError for an operation that judged tokens before
// it failed: their verdicts, and the final state of the response they
// ended, go beside the error.
func (srv *Server) writeErrorWith(w http.ResponseWriter, err error, tokens []guard.TokenVerdict, ended *State) {
	code, b, wait := srv.errorStatus(err)
	if wait > 0 {
		setRetryAfter(w, wait)
		b.RetryAfter = max(1, int(math.Ceil(wait.Seconds())))
	}
	if code == http.StatusInternalServerError {
		srv.log.Error("internal error", "error", err.Error())
	}
	writeJSON(w, code, struct {
		apiError
		Tokens []guard.TokenVerdict `json:"tokens,omitempty"`
		Ended  *State               `json:"ended,omitempty"`
	}{apiError{b}, tokens, ended})
}

// requestIDKey holds a request's id (X-Request-Id) in its context.
type requestIDKey struct{}

// requestID is the id wrap gave the request of ctx, or a new one outside
// a request (a test calling a handler's work directly).
func requestID(ctx context.Context) string {
	if id, ok := ctx.Value(requestIDKey{}).(string); ok {
		return id
	}
	return newRequestID()
}

// newRequestID is 96 random bits in hex.
func newRequestID() string { return newStreamID()[:24] }

// decodeJSON reads one JSON value from the body into v. Its keys must be
// the fields' exact keys, each once (jsonkeys.Check): encoding/json would
// take "Input" for "input" and the last of two, where a client or proxy
// reading the same body exactly may see another text.
func decodeJSON(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			return err
		}
		// A body deadline, a closed connection: kept, so that the
		// answer says so (408).
		return badRequest{fmt.Errorf("invalid JSON body: %w", err)}
	}
	if err := jsonkeys.Check(b, v); err != nil {
		return badRequest{fmt.Errorf("invalid JSON body: %w", err)}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest{fmt.Errorf("invalid JSON body: %w", err)}
	}
	// Nothing but white space may follow the value. More would miss a
	// stray '}' or ']' (it reports no more elements), so read a token.
	switch _, err := dec.Token(); {
	case err == io.EOF:
		return nil
	case errors.As(err, new(*http.MaxBytesError)):
		return err
	case err != nil && !errors.As(err, new(*json.SyntaxError)):
		// Reading failed (a body deadline, a closed connection): kept,
		// so that the answer says so (408), as during Decode.
		return badRequest{fmt.Errorf("invalid JSON body: %w", err)}
	}
	return badRequest{errors.New("invalid JSON body: more than one value, or data after it")}
}

func (srv *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz is 200 while the server takes new work, 503 once it drains.
func (srv *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if srv.isDraining() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "draining")
		return
	}
	fmt.Fprintln(w, "ready")
}

func (srv *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	srv.metrics.write(w)
}

// infoResponse describes the model and the limits.
type infoResponse struct {
	Model           string   `json:"model"`
	Tenant          string   `json:"tenant"`
	RiskLevels      []string `json:"risk_levels"`
	QueryRiskLevels []string `json:"query_risk_levels"`
	Categories      []string `json:"response_categories"`
	QueryCategories []string `json:"query_categories"`
	MaxStreamTokens int      `json:"max_stream_tokens"`
	KVBytesPerToken int64    `json:"kv_bytes_per_token"`
	KVCache         string   `json:"kv_cache"`
	KVBudgetBytes   int64    `json:"kv_budget_bytes"`
	Device          string   `json:"device"`                // where the model runs: "cpu", "cuda:0 (NVIDIA ...)"
	DeviceNote      string   `json:"device_note,omitempty"` // with --device auto on the CPU: why no GPU
	Policy          policyJS `json:"policy"`
}

type policyJS struct {
	Mode       string             `json:"mode"`
	Debounce   int                `json:"debounce"`
	Thresholds map[string]float32 `json:"thresholds,omitempty"`
	Block      []string           `json:"block,omitempty"`
	EveryTurn  bool               `json:"every_turn,omitempty"`
}

func (srv *Server) serveInfo(w http.ResponseWriter, r *http.Request, t *Tenant) {
	l := srv.info.Labels
	_, limit := srv.budget.usage()
	deb := t.Policy.Debounce
	if deb == 0 {
		deb = guard.DefaultDebounce
	}
	writeJSON(w, http.StatusOK, infoResponse{
		Model: srv.name, Tenant: t.Name, RiskLevels: l.ResponseRisk, QueryRiskLevels: l.QueryRisk,
		Categories: l.ResponseCategory, QueryCategories: l.QueryCategory,
		MaxStreamTokens: srv.maxStreamTokens, KVBytesPerToken: srv.info.KVBytesPerToken, KVCache: srv.info.KVCache, KVBudgetBytes: limit * srv.info.KVBytesPerToken,
		Device: srv.info.Device, DeviceNote: srv.info.DeviceNote,
		Policy: policyJS{Mode: t.Policy.Mode.String(), Debounce: deb, Thresholds: t.Policy.Thresholds, Block: t.Policy.Block, EveryTurn: t.Policy.EveryTurn},
	})
}

// modelObject is OpenAI's model object; Created is when the server
// started (the served model has no creation date of its own).
type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (srv *Server) modelObject() modelObject {
	return modelObject{ID: srv.name, Object: "model", Created: srv.started.Unix(), OwnedBy: "streamguard"}
}

// listModels is OpenAI's GET /v1/models: the one served model.
func (srv *Server) listModels(w http.ResponseWriter, r *http.Request, t *Tenant) {
	writeJSON(w, http.StatusOK, struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}{"list", []modelObject{srv.modelObject()}})
}

// getModel is OpenAI's GET /v1/models/{model}.
func (srv *Server) getModel(w http.ResponseWriter, r *http.Request, t *Tenant) {
	id := r.PathValue("model")
	if id != srv.name {
		param := "model"
		writeJSON(w, http.StatusNotFound, apiError{apiErrorBody{Message: fmt.Sprintf("the model %q does not exist; this server serves %q", id, srv.name),
			Type: "invalid_request_error", Param: &param, Code: "model_not_found"}})
		return
	}
	writeJSON(w, http.StatusOK, srv.modelObject())
}
