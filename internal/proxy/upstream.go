package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// hopHeaders are not forwarded in either direction (RFC 9110 §7.6.1), nor
// are the ones the proxy or the transport set itself.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true, "Accept-Encoding": true, "Content-Encoding": true,
}

// UpstreamAuthHeader carries the client's own credentials for the
// upstream: "Bearer KEY" (any case) or just KEY; it becomes the upstream
// request's Authorization header. Without it the tenant's UpstreamKey is
// used. The client's Authorization and X-Api-Key headers are streamguard's
// tenant key and never go upstream.
const UpstreamAuthHeader = "X-Upstream-Authorization"

// clientOnly reports the request headers that do not go upstream as they
// are: the client's upstream credentials (sent as Authorization instead)
// and, unless the tenant forwards them, streamguard's own credentials.
func (t *Tenant) clientOnly(k string) bool {
	switch k {
	case UpstreamAuthHeader:
		return true
	case "Authorization", "X-Api-Key":
		return !t.ForwardAuthorization
	}
	return false
}

// credentialHeaders are the headers clientOnly may hold back.
var credentialHeaders = []string{"Authorization", "X-Api-Key", UpstreamAuthHeader}

// browserHeader reports a browser's cross-origin header, which the proxy does
// not pass in either direction: an upstream's Access-Control-* answer
// (vLLM allows every origin by default) would make the guard's origin
// readable from any web page, and the client's Origin is not the
// upstream's business.
func browserHeader(k string) bool {
	return k == "Origin" || strings.HasPrefix(k, "Access-Control-")
}

// copyHeaders copies end-to-end headers; cookies (Cookie, Set-Cookie) only
// when cookies is set.
func copyHeaders(dst, src http.Header, cookies bool) {
	for k, vs := range src {
		if hopHeaders[k] || browserHeader(k) || strings.HasPrefix(k, "X-Streamguard-") || !cookies && (k == "Cookie" || k == "Set-Cookie") {
			continue
		}
		if k == "X-Request-Id" {
			dst.Del(k) // the upstream's id replaces the proxy's
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// upstreamAuthorization is the upstream request's Authorization value:
// the client's X-Upstream-Authorization ("Bearer KEY" with the scheme in
// any case, a bare KEY, or another scheme as it is), else the tenant's
// key, else none.
func upstreamAuthorization(client, tenantKey string) string {
	v := strings.TrimSpace(client)
	if v == "" {
		if tenantKey == "" {
			return ""
		}
		return "Bearer " + tenantKey
	}
	scheme, tok, ok := strings.Cut(v, " ")
	switch {
	case !ok:
		return "Bearer " + v
	case strings.EqualFold(scheme, "bearer"):
		return "Bearer " + strings.TrimSpace(tok)
	}
	return v
}

// errUpstreamTimeout is the cause of an exchange cancelled because the
// upstream was too slow to answer or went quiet.
var errUpstreamTimeout = errors.New("upstream timeout")

// callUpstream forwards the request body unchanged, with the caller's
// end-to-end headers less its credentials and cookies (see
// UpstreamAuthHeader and Config.ForwardCookies). The response headers
// must come within Config.HeaderTimeout.
func (x *exchange) callUpstream() (*http.Response, error) {
	req, err := http.NewRequestWithContext(x.ctx, http.MethodPost, x.h.endpoint, bytes.NewReader(x.body))
	if err != nil {
		return nil, err
	}
	for k, vs := range x.r.Header {
		if x.t.clientOnly(k) {
			continue
		}
		if k == "Cookie" && !x.h.cfg.ForwardCookies {
			continue
		}
		if !hopHeaders[k] && !browserHeader(k) && !strings.HasPrefix(k, "X-Streamguard-") {
			req.Header[k] = append([]string(nil), vs...)
		}
	}
	if a := upstreamAuthorization(x.r.Header.Get(UpstreamAuthHeader), x.t.UpstreamKey); a != "" {
		req.Header.Set("Authorization", a)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	d := x.h.cfg.HeaderTimeout
	t := time.AfterFunc(d, func() {
		x.cancelCause(fmt.Errorf("%w: no response headers within %s", errUpstreamTimeout, d))
	})
	resp, err := x.h.client.Do(req)
	// An answer was generated (and billed): a 2xx. The upstream's own
	// error statuses say themselves whether to retry.
	x.answered = err == nil && resp.StatusCode/100 == 2
	if !t.Stop() && err == nil {
		// The timer fired as the headers came: the exchange is cancelled.
		resp.Body.Close()
		return nil, context.Cause(x.ctx)
	}
	if err != nil && errors.Is(context.Cause(x.ctx), errUpstreamTimeout) {
		err = context.Cause(x.ctx)
	}
	return resp, err
}

// idleReader reads an upstream body that must not go quiet for longer
// than d: when it does, the exchange is cancelled and Read returns the
// timeout.
type idleReader struct {
	r   io.Reader
	ctx context.Context
	d   time.Duration
	t   *time.Timer
}

func (x *exchange) idleBody(r io.Reader) *idleReader {
	d := x.h.cfg.IdleTimeout
	ir := &idleReader{r: r, ctx: x.ctx, d: d}
	ir.t = time.AfterFunc(d, func() {
		x.cancelCause(fmt.Errorf("%w: the upstream sent nothing for %s", errUpstreamTimeout, d))
	})
	return ir
}

func (ir *idleReader) Read(p []byte) (int, error) {
	n, err := ir.r.Read(p)
	if err != nil {
		ir.t.Stop()
		if cause := context.Cause(ir.ctx); errors.Is(cause, errUpstreamTimeout) {
			err = cause
		}
		return n, err
	}
	ir.t.Reset(ir.d)
	return n, nil
}

// stop ends the watch (the body is not read further).
func (ir *idleReader) stop() { ir.t.Stop() }

func isEventStream(resp *http.Response) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	return mt == "text/event-stream"
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// upstreamFailed answers when the upstream could not be reached.
func (x *exchange) upstreamFailed(err error) {
	// The upstream stalled or broke off: a retry may well succeed, as it
	// would calling the upstream directly.
	x.answered = false
	if x.r.Context().Err() != nil {
		x.finish(EventClientClosed)
		return
	}
	if isTimeout(err) || errors.Is(err, errUpstreamTimeout) {
		x.fail(http.StatusGatewayTimeout, EventUpstreamError, apiError{
			Message: "streamguard: the upstream timed out: " + err.Error(), Type: typeUpstream, Code: "upstream_timeout"})
		return
	}
	x.fail(http.StatusBadGateway, EventUpstreamError, apiError{
		Message: "streamguard: the upstream could not be reached: " + err.Error(), Type: typeUpstream, Code: "upstream_unreachable"})
}

// upstreamStatus relays an upstream error status: an OpenAI error body as
// it is, anything else wrapped in one.
func (x *exchange) upstreamStatus(resp *http.Response) {
	ir := x.idleBody(resp.Body)
	defer ir.stop()
	body, err := io.ReadAll(io.LimitReader(ir, 1<<20))
	if err != nil && x.r.Context().Err() != nil {
		x.finish(EventClientClosed)
		return
	}
	attrs := []slog.Attr{slog.Int("upstream_status", resp.StatusCode)}
	// Retry-After, rate-limit headers and the like go to the client.
	copyHeaders(x.w.Header(), resp.Header, x.h.cfg.ForwardCookies)
	x.w.Header().Del("Content-Type")
	if err == nil && isAPIError(body) {
		h := x.w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		x.w.WriteHeader(resp.StatusCode)
		_, _ = x.w.Write(body)
		x.finish(EventUpstreamError, attrs...)
		return
	}
	snippet := validPrefix(string(body[:min(len(body), 200)]))
	status := resp.StatusCode
	if status < 400 {
		status = http.StatusBadGateway // 1xx/3xx from an API upstream is a fault
	}
	x.fail(status, EventUpstreamError, apiError{
		Message: fmt.Sprintf("streamguard: the upstream answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(snippet)),
		Type:    typeUpstream, Code: "upstream_error"}, attrs...)
}

// forwardUnjudged is fail-open: the upstream's answer goes to the client
// unjudged, marked with X-Streamguard-Unjudged and in the audit log.
func (x *exchange) forwardUnjudged(cause error) {
	x.w.Header().Set("X-Streamguard-Unjudged", "1")
	resp, err := x.callUpstream()
	if err != nil {
		x.upstreamFailed(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		x.upstreamStatus(resp)
		return
	}
	copyHeaders(x.w.Header(), resp.Header, x.h.cfg.ForwardCookies)
	x.w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(x.w)
	_ = rc.SetWriteDeadline(time.Time{})
	body := x.idleBody(resp.Body)
	defer body.stop()
	buf := make([]byte, 32<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := x.w.Write(buf[:n]); werr != nil {
				x.finish(EventClientClosed, slog.String("reason", cause.Error()))
				return
			}
			_ = rc.Flush()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if x.r.Context().Err() != nil {
				x.finish(EventClientClosed, slog.String("reason", cause.Error()))
				return
			}
			if isEventStream(resp) {
				e := streamBroken(rerr)
				if errors.Is(rerr, errUpstreamTimeout) {
					e = apiError{Message: "streamguard: " + rerr.Error(), Type: typeUpstream, Code: "upstream_timeout"}
				}
				_, _ = x.w.Write(errorEvent(e))
			}
			x.finish(EventUpstreamError, slog.String("reason", cause.Error()), slog.String("error", rerr.Error()))
			return
		}
	}
	x.finish(EventUnjudged, slog.String("reason", cause.Error()))
}

func mustJSON(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the proxy's own types always encode
	return bytes.TrimRight(b.Bytes(), "\n")
}
