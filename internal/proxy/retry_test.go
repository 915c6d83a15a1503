package proxy

import (
	"testing"
)

// TestUpstreamOwnErrorRetryable: an upstream error status with a body
// that is not an OpenAI error (a load balancer's HTML 503, a gateway's
// plain-text 429) is the upstream's own failure: nothing was generated,
// and a retry could succeed. The proxy does not tell the SDKs
// X-Should-Retry: false for it, and keeps the upstream's own.
func TestUpstreamOwnErrorRetryable(t *testing.T) {
	m := tinyModel(t)
	ten := Tenant{Policy: safePolicy(m)}
	for _, c := range []struct {
		status int
		body   string
		hdr    map[string]string
	}{
		{503, "<html>Service Temporarily Unavailable</html>", nil},
		{429, "Too Many Requests", map[string]string{"Retry-After": "1"}},
		{502, "<html>Bad Gateway</html>", map[string]string{"X-Should-Retry": "true"}},
	} {
		up := newFakeUpstream(t, upstreamSpec{Status: c.status, ErrBody: c.body, Header: c.hdr})
		p := newTestProxy(t, up.URL, Direct(m), ten, nil)
		resp, body := rawPost(t, p.URL, "Hello", false, nil)
		t.Logf("upstream %d %q: proxy status %d, X-Should-Retry %q, body %s", c.status, c.body, resp.StatusCode, resp.Header.Values("X-Should-Retry"), body)
		if v, up := resp.Header.Get("X-Should-Retry"), c.hdr["X-Should-Retry"]; v == "false" || v != up {
			t.Errorf("upstream's own %d (%q): proxy answers %d with X-Should-Retry: false; the SDKs will not retry a retryable upstream failure", c.status, c.body, resp.StatusCode)
		}
	}
}
