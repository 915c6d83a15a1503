package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Config configures the proxy handler.
type Config struct {
	// Upstream is the upstream's base URL, e.g. https://api.openai.com; the
	// handler appends /v1/chat/completions, or /chat/completions when the
	// URL already ends in /v1.
	Upstream string
	// Client calls the upstream; nil means a client with dial, TLS and
	// response-header timeouts and no overall timeout (streams are long).
	Client *http.Client
	// DefaultTenant serves requests whose context carries no tenant.
	DefaultTenant Tenant
	// Audit receives one record per request: tenant, request id, event,
	// mode, levels, category and token index; never content. Nil: none.
	Audit *slog.Logger
	// IdleTimeout bounds the wait for the upstream's next bytes while a
	// response body (streamed or not) arrives; 0 means DefaultIdleTimeout.
	// A stalled upstream gets 504 upstream_timeout (an error event once a
	// stream has started).
	IdleTimeout time.Duration
	// HeaderTimeout bounds the wait for the upstream's response headers
	// (a non-streamed completion sends them when it is done); 0 means
	// DefaultHeaderTimeout. Past it: 504 upstream_timeout.
	HeaderTimeout time.Duration
	// WriteIdleTimeout bounds each write of an answer to the client: one
	// that stops reading for this long is let go (its connection closed,
	// the upstream call and the guard stream ended); 0 means
	// DefaultWriteIdleTimeout.
	WriteIdleTimeout time.Duration
	// ForwardCookies sends the client's Cookie header upstream and the
	// upstream's Set-Cookie to the client; by default neither is.
	ForwardCookies bool
	// MaxRequestBytes caps a request body; 0 means 8 MiB. A non-streamed
	// upstream response may be four times as large.
	MaxRequestBytes int64
	// Observe, when set, is called once per request with its outcome (for
	// metrics). It must not block.
	Observe func(Outcome)
}

// DefaultIdleTimeout is Config.IdleTimeout's default.
const DefaultIdleTimeout = 2 * time.Minute

// DefaultWriteIdleTimeout is Config.WriteIdleTimeout's default.
const DefaultWriteIdleTimeout = 30 * time.Second

// DefaultHeaderTimeout is Config.HeaderTimeout's default.
const DefaultHeaderTimeout = 10 * time.Minute

const defaultMaxRequestBytes = 8 << 20

// maxResponseBytes bounds what the proxy holds of one response: a whole
// body, or a stream's events waiting for the guard's verdicts.
func (c *Config) maxResponseBytes() int64 { return 4 * c.MaxRequestBytes }

// Outcome describes how one request ended.
type Outcome struct {
	Tenant string
	// Event is one of the Event* constants.
	Event  string
	Stream bool
	Mode   Mode
	// Tokens is the number of response tokens judged.
	Tokens int
	// Duration is the time from the request to its last byte.
	Duration time.Duration
}

// Outcome events (also the audit records' "event" attribute).
const (
	EventAllowed         = "allowed"          // forwarded, judged, not flagged
	EventPromptFlagged   = "prompt_flagged"   // refused before calling the upstream
	EventResponseFlagged = "response_flagged" // cut (stream) or withheld (whole)
	EventUnjudged        = "unjudged"         // fail-open: forwarded without judging
	EventOverloaded      = "overloaded"       // fail-closed: 503
	EventGuardError      = "guard_error"      // the guard failed, fail-closed
	EventUpstreamError   = "upstream_error"   // upstream error, timeout or disconnect
	EventClientClosed    = "client_closed"    // the client went away
	EventBadRequest      = "bad_request"      // the request was refused as malformed
	// EventContextLength: the prompt (400) or the response (cut with
	// finish_reason "length") does not fit the guard's stream.
	EventContextLength = "context_length_exceeded"
)

// endpoint turns the upstream base URL into the URL of route (after /v1).
func endpoint(base, route string) (string, error) {
	if base == "" {
		return "", errors.New("proxy: no upstream URL")
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("proxy: upstream URL %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("proxy: upstream URL %q: scheme must be http or https", base)
	}
	if u.Host == "" {
		return "", fmt.Errorf("proxy: upstream URL %q has no host", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("proxy: upstream URL %q: a base URL takes no query or fragment", base)
	}
	p := strings.TrimRight(u.Path, "/")
	if strings.HasSuffix(p, "/v1") {
		u.Path = p + route
	} else {
		u.Path = p + "/v1" + route
	}
	return u.String(), nil
}

// defaultClient has no overall timeout: a stream lasts as long as the
// upstream generates, and Config.IdleTimeout catches a stalled one. The
// response-header timeout is long because a non-streamed completion sends
// its headers only when it is done.
//
// Redirects are not followed: the request carries the caller's upstream
// credentials (X-Api-Key among them, which net/http would pass on to
// another host), and a chat-completions endpoint has no reason to move;
// the upstream's 3xx goes back to the caller as its answer.
func defaultClient() *http.Client {
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }, Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Minute,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   64,
		ForceAttemptHTTP2:     true,
	}}
}
