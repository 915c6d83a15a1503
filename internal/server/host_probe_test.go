package server

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
)

// TestHTTP10ProbeWithoutHost: HAProxy's `http-check send meth GET uri
// /readyz` (deploy/haproxy/haproxy.cfg) sends HTTP/1.0 without a Host
// header; with the Host check on, the replica must still answer it (no
// browser sends a request without Host).
func TestHTTP10ProbeWithoutHost(t *testing.T) {
	h := newHarness(t, Options{CheckHost: true})
	c, err := net.Dial("tcp", strings.TrimPrefix(h.ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET /readyz HTTP/1.0\r\n\r\n"))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Errorf("HTTP/1.0 health check without Host (HAProxy's default): status %d, want 200", resp.StatusCode)
	}
}
