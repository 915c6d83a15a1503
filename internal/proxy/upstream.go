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
)

// hopHeaders are not forwarded in either direction (RFC 9110 §7.6.1), nor
// are the ones the proxy or the transport set itself.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Host": true, "Content-Length": true, "Accept-Encoding": true, "Content-Encoding": true,
}

func copyHeaders(dst, src http.Header) {
	for k, vs := range src {
		if hopHeaders[k] || strings.HasPrefix(k, "X-Streamguard-") {
			continue
		}
		for _, v := range vs {
			dst.Add(k, v)
		}
	}
}

// callUpstream forwards the request body unchanged, with the caller's
// headers (its Authorization too, unless the tenant has an upstream key).
func (x *exchange) callUpstream() (*http.Response, error) {
	req, err := http.NewRequestWithContext(x.ctx, http.MethodPost, x.h.endpoint, bytes.NewReader(x.body))
	if err != nil {
		return nil, err
	}
	copyHeaders(req.Header, x.r.Header)
	if x.t.UpstreamKey != "" {
		req.Header.Set("Authorization", "Bearer "+x.t.UpstreamKey)
	}
	if req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	return x.h.client.Do(req)
}

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
	if x.r.Context().Err() != nil {
		x.finish(EventClientClosed)
		return
	}
	if isTimeout(err) {
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
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil && x.r.Context().Err() != nil {
		x.finish(EventClientClosed)
		return
	}
	attrs := []slog.Attr{slog.Int("upstream_status", resp.StatusCode)}
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
	copyHeaders(x.w.Header(), resp.Header)
	x.w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(x.w)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := resp.Body.Read(buf)
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
			if isEventStream(resp) {
				_, _ = x.w.Write(errorEvent(streamBroken(rerr)))
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
