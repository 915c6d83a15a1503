package server

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestHostAllowed(t *testing.T) {
	allowed := []string{"guard.internal", ".corp.example."}
	for _, c := range []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:8080", true},
		{"127.0.0.1", true},
		{"[::1]:8080", true},
		{"[::1]", true},
		{"10.0.0.7:8080", true}, // an address, not a name: no page can be served under it but the server's
		{"localhost:8080", true},
		{"LOCALHOST", true},
		{"localhost.:8080", true},
		{"app.localhost:3000", true},
		{"guard.internal:8080", true},
		{"GUARD.internal", true},
		{"a.corp.example", true},
		{"corp.example", false}, // ".corp.example" allows the names under it only
		{"", true},              // HTTP/1.0 without a Host: no browser sends one
		{":8080", false},
		{"evil.example:8080", false},
		{"127.0.0.1.nip.io:8080", false},
		{"localhost.evil.example", false},
		{"evillocalhost", false},
		{"guard.internal.evil.example", false},
		{"xcorp.example", false},
		{"2130706433", false}, // 127.0.0.1 as one number: a name to netip
	} {
		if got := hostAllowed(c.host, allowed); got != c.ok {
			t.Errorf("hostAllowed(%q) = %v, want %v", c.host, got, c.ok)
		}
	}
}

// TestCheckHost: with CheckHost a request naming another host is refused
// in OpenAI's error shape before any route runs; one naming an address
// or localhost is served.
func TestCheckHost(t *testing.T) {
	h := newHarness(t, Options{CheckHost: true, AllowedHosts: []string{"guard.internal"}})
	for _, c := range []struct {
		host string
		code int
	}{
		{"", http.StatusOK}, // the test server's address
		{"localhost", http.StatusOK},
		{"guard.internal:80", http.StatusOK},
		{"rebound.evil.example", http.StatusForbidden},
	} {
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/moderations", strings.NewReader(`{"input":"hello"}`))
		req.Header.Set("Content-Type", "application/json")
		if c.host != "" {
			req.Host = c.host
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("host %q: status %d: %s", c.host, resp.StatusCode, b)
			continue
		}
		if c.code == http.StatusForbidden {
			var e errBody
			if err := json.Unmarshal(b, &e); err != nil || e.Error.Code != "host_not_allowed" || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "DNS rebinding") {
				t.Errorf("host %q: body %s", c.host, b)
			}
		}
	}
	// Probes answer any Host (Envoy health-checks by its cluster's name).
	for _, path := range []string{"/healthz", "/readyz"} {
		req, _ := http.NewRequest("GET", h.ts.URL+path, nil)
		req.Host = "streamguard"
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s for host streamguard: status %d", path, resp.StatusCode)
		}
	}
	// Off (the default), any name is served.
	h = newHarness(t, Options{})
	req, _ := http.NewRequest("GET", h.ts.URL+"/v1/models", nil)
	req.Host = "rebound.evil.example"
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("without CheckHost: status %d", resp.StatusCode)
	}
}

// FuzzHostAllowed: any Host header is answered without a panic; a host
// let through with no names allowed is an address or a localhost name
// (whatever follows it as a port: "7.0.0.1:n" is the address 7.0.0.1, no
// name a page could re-point), and allowing a name never refuses a host
// that was let through without it.
func FuzzHostAllowed(f *testing.F) {
	for _, s := range []string{"127.0.0.1:8080", "[::1]", "localhost.", "a.localhost:1", "evil.example", "[", "]:", "[fe80::1%eth0]:80", "guard.internal"} {
		f.Add(s, "guard.internal")
	}
	f.Fuzz(func(t *testing.T, host, name string) {
		bare := hostAllowed(host, nil)
		if bare && host != "" {
			h := host
			if name, _, err := net.SplitHostPort(host); err == nil {
				h = name
			}
			h = strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]"))
			local := strings.TrimSuffix(h, ".")
			if _, err := netip.ParseAddr(h); err != nil && local != "localhost" && !strings.HasSuffix(local, ".localhost") {
				t.Fatalf("%q let through with no names allowed", host)
			}
		}
		if bare && !hostAllowed(host, []string{name}) {
			t.Fatalf("%q refused once %q is allowed", host, name)
		}
	})
}
