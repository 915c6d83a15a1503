package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Client talks to a hub and writes into its cache. The zero value is not
// usable: build one with NewClient.
type Client struct {
	Env
	// HTTP sends the requests; its CheckRedirect is ignored (the client
	// follows redirects itself where the protocol wants it).
	HTTP *http.Client
	// Parallel is the number of files downloaded at once.
	Parallel int
	// Retries is how many times a failed transfer is tried again (each
	// time resuming where it stopped); a corrupt download is fetched
	// again once more on top.
	Retries int
	// RetryWait is the first pause between tries; it doubles each time.
	RetryWait time.Duration
	// UserAgent names the client to the hub.
	UserAgent string
}

// NewClient returns a client for env with the defaults: 8 files at once
// (as huggingface_hub), 5 retries.
func NewClient(env Env) *Client {
	return &Client{
		Env:       env,
		HTTP:      &http.Client{Transport: defaultTransport()},
		Parallel:  8,
		Retries:   5,
		RetryWait: time.Second,
		UserAgent: "streamguard (hf_hub compatible)",
	}
}

// defaultTransport bounds the waits that would otherwise hang a pull
// forever on a dead connection; the transfer itself has no deadline.
func defaultTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	t.DialContext = (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return t
}

// Cache is the cache the client writes into.
func (c *Client) Cache() Cache { return Cache{Dir: c.CacheDir} }

// clients returns one client that follows redirects (Go strips the
// Authorization header when they leave the host) and one that does not.
func (c *Client) clients() (follow, noFollow *http.Client) {
	base := c.HTTP
	if base == nil {
		base = &http.Client{Transport: defaultTransport()}
	}
	f, n := *base, *base
	f.CheckRedirect = nil
	n.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &f, &n
}

// newRequest builds a request with the hub's headers. The token goes only
// to the hub itself, never to a CDN a file was redirected to.
func (c *Client) newRequest(ctx context.Context, method, rawURL string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if c.UserAgent != "" {
		req.Header.Set("User-Agent", c.UserAgent)
	}
	// Sizes and Range offsets are of the stored bytes, never of a
	// compressed transfer.
	req.Header.Set("Accept-Encoding", "identity")
	if c.Token != "" && c.sameHost(req.URL) {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return req, nil
}

func (c *Client) sameHost(u *url.URL) bool {
	ep, err := url.Parse(c.Endpoint)
	return err == nil && strings.EqualFold(ep.Host, u.Host)
}

// HTTPError is a hub answer other than success. Code is the hub's
// X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo…)
// when it sent one.
type HTTPError struct {
	URL     string
	Status  int
	Code    string
	Message string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: HTTP %d", e.URL, e.Status)
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	switch {
	case e.Code == "GatedRepo" || e.Status == http.StatusForbidden:
		b.WriteString(" (a gated or private repository: accept its terms on the hub and set HF_TOKEN)")
	case e.Status == http.StatusUnauthorized:
		b.WriteString(" (the repository does not exist, or it is private: check the name, or set HF_TOKEN)")
	}
	return b.String()
}

// temporary reports whether trying again may help.
func (e *HTTPError) temporary() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
}

// maxErrorBody bounds how much of an error body is read for its message.
const maxErrorBody = 4 << 10

func newHTTPError(resp *http.Response) *HTTPError {
	// The code and message come from the server and end up on a
	// terminal: only printable text is kept.
	e := &HTTPError{URL: resp.Request.URL.Redacted(), Status: resp.StatusCode,
		Code: printableMessage(resp.Header.Get("X-Error-Code")), Message: printableMessage(resp.Header.Get("X-Error-Message"))}
	if e.Message == "" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e.Message = errorBodyMessage(b)
	}
	return e
}

// errorBodyMessage extracts {"error": "..."} from a hub error body, or
// returns the first line of a short text body; either way as
// printableMessage makes it.
func errorBodyMessage(b []byte) string {
	var v struct {
		Error string `json:"error"`
	}
	if err := unmarshalJSON(b, &v); err == nil && v.Error != "" {
		return printableMessage(v.Error)
	}
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 200 || strings.ContainsAny(s, "<{") {
		return ""
	}
	return printableMessage(s)
}

// maxMessageLen bounds a message from the server kept in an error.
const maxMessageLen = 500

// printableMessage makes text from the server fit to print in an error
// message: one line, without the characters a terminal acts on (see
// unsafeInName: escape sequences, newlines, bidirectional controls), each
// run of them and of white space one space, invalid UTF-8 as U+FFFD, and
// at most maxMessageLen bytes (then "…").
func printableMessage(s string) string {
	var b strings.Builder
	gap := false
	for _, r := range s {
		if unicode.IsSpace(r) || unsafeInName(r) {
			gap = true
			continue
		}
		sep := ""
		if gap && b.Len() > 0 {
			sep = " "
		}
		gap = false
		if b.Len()+len(sep)+utf8.RuneLen(r) > maxMessageLen {
			b.WriteString("…")
			break
		}
		b.WriteString(sep)
		b.WriteRune(r)
	}
	return b.String()
}

// ErrOffline reports that the network is off (HF_HUB_OFFLINE) and the
// cache does not have what was asked for.
var ErrOffline = errors.New("offline mode (HF_HUB_OFFLINE) is on")

// retryable reports whether a failed transfer should be tried again.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var he *HTTPError
	if errors.As(err, &he) {
		return he.temporary()
	}
	var pe *permanentError
	return !errors.As(err, &pe)
}

// permanentError marks a failure that the same request would repeat.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
