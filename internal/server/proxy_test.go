package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/guard"
)

// fakeUpstream answers chat completions with testResponse, streamed in
// small deltas when asked.
func fakeUpstream(t *testing.T) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}]}`, testResponse)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rs := []rune(testResponse)
		for i := 0; i < len(rs); i += 4 {
			delta, _ := json.Marshal(string(rs[i:min(i+4, len(rs))]))
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n", delta)
		}
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	return up
}

// flagAndPassTenants are two tenants: a, whose policy flags every prompt,
// and b, whose flags nothing (loose mode, one category blocked at a
// threshold no score reaches); edit changes b.
func flagAndPassTenants(m *guard.Model, edit func(b *TenantConfig)) *Config {
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0
	}
	cats := m.Info().Labels.ResponseCategory
	return twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Debounce: 1, Thresholds: thr}
		b.Policy = PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}}
		if edit != nil {
			edit(b)
		}
	})
}

// TestProxyMount relays chat completions through the scheduler with each
// tenant's policy: one tenant's policy flags every prompt, the other's
// nothing.
func TestProxyMount(t *testing.T) {
	m := testModel(t)
	cfg := flagAndPassTenants(m, func(b *TenantConfig) { b.Proxy.Mode = "pass-through" })
	h := newHarness(t, Options{Config: cfg})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: fakeUpstream(t).URL}); err != nil {
		t.Fatal(err)
	}
	chat := func(key string, stream bool) (int, string) {
		body := fmt.Sprintf(`{"model":"m","stream":%v,"messages":[{"role":"user","content":%q}]}`, stream, testPrompt)
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := chat("", false); code != 401 {
		t.Fatalf("no key: status %d", code)
	}
	if code, body := chat("key-a", false); code != 400 || !strings.Contains(body, "content_filter") {
		t.Fatalf("tenant a: status %d %s", code, body)
	}
	if code, body := chat("key-b", false); code != 200 || !strings.Contains(body, "three minutes") {
		t.Fatalf("tenant b: status %d %s", code, body)
	}
	code, body := chat("key-b", true)
	if code != 200 || !strings.Contains(body, "data: [DONE]") || !strings.Contains(body, `"finish_reason":"stop"`) {
		t.Fatalf("tenant b streamed: status %d %s", code, body)
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams open", n)
	}
	var sb strings.Builder
	h.srv.metrics.write(&sb)
	if !strings.Contains(sb.String(), `streamguard_proxy_requests_total{tenant="b",event="allowed"} 2`) {
		t.Fatalf("metrics:\n%s", sb.String())
	}
}

// TestProxyOptionsReachTheProxy: the serve options and the tenant file's
// proxy keys added for the upstream's timeouts, cookies and long prompts
// reach the proxy.
func TestProxyOptionsReachTheProxy(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	h := newHarness(t, Options{})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: slow.URL, HeaderTimeout: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	var e errBody
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	if code, _ := h.do("POST", "/v1/chat/completions", "", body, &e); code != http.StatusGatewayTimeout || e.Error.Code != "upstream_timeout" {
		t.Errorf("slow upstream headers: status %d, %+v; want 504 upstream_timeout", code, e.Error)
	}

	pt, err := h.srv.proxyTenant(&Tenant{Name: "a", Proxy: ProxyConfig{TrimLongPrompt: true}})
	if err != nil || !pt.TrimLongPrompt {
		t.Errorf("trim_long_prompt: %+v, %v", pt, err)
	}
	cfg, err := ParseConfig([]byte(`{"tenants":[{"name":"a","api_key_sha256":["` + strings.Repeat("0", 64) + `"],"proxy":{"trim_long_prompt":true}}]}`))
	if err != nil || !cfg.Tenants[0].Proxy.TrimLongPrompt {
		t.Errorf("tenant file: %+v, %v", cfg, err)
	}
}

// TestProxyStreamOutlastsRequestTimeout streams a completion that takes
// longer than --request-timeout: the proxy bounds its own times (upstream
// header and idle timeouts), so the answer must arrive whole, not cut when
// the request timeout fires.
func TestProxyStreamOutlastsRequestTimeout(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 6 {
			fmt.Fprintf(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word%d \"},\"finish_reason\":null}]}\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	// Tenant b's policy cannot flag (one blocked category, threshold 1), so
	// the answer runs to its end unless something cuts it.
	cats := testModel(t).Info().Labels.ResponseCategory
	cfg := twoTenants(func(a, b *TenantConfig) {
		b.Policy = PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}}
	})
	h := newHarness(t, Options{Config: cfg, RequestTimeout: 250 * time.Millisecond})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer key-b")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "word5") || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
		t.Fatalf("status %d, body:\n%s", resp.StatusCode, b)
	}
}

// TestProxySlowBody: the proxy's chat completions read their body through
// the same deadlines as the server's own routes, and answer a body that
// stopped arriving as they do: 408 request_timeout.
func TestProxySlowBody(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil), BodyIdleTimeout: 300 * time.Millisecond})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: fakeUpstream(t).URL}); err != nil {
		t.Fatal(err)
	}
	body := `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	c := dialRaw(t, h.ts.Listener.Addr().String())
	c.write(postHeader("/v1/chat/completions", "key-a", len(body)) + body[:5])
	code, resp, err := c.answer(20 * time.Second)
	if err != nil || code != http.StatusRequestTimeout || !strings.Contains(resp, `"code":"request_timeout"`) {
		t.Fatalf("stalled body: %d %q %v", code, resp, err)
	}
}

// TestCrossSiteRequests: a request a web page of another origin makes a
// browser send (a text/plain POST needs no preflight) is refused, on a
// server without tenants too; clients that are not browsers, and the
// server's own pages, are not affected; every answer says nosniff.
func TestCrossSiteRequests(t *testing.T) {
	h := newHarness(t, Options{})
	host := h.ts.Listener.Addr().String()
	for _, c := range []struct {
		name   string
		header map[string]string
		code   int
	}{
		{"no browser", nil, http.StatusCreated},
		{"same origin", map[string]string{"Origin": "http://" + host, "Sec-Fetch-Site": "same-origin"}, http.StatusCreated},
		{"other origin", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"other origin, same host name", map[string]string{"Origin": "http://" + host + ".evil.example"}, http.StatusForbidden},
		{"opaque origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	} {
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/streams", strings.NewReader(`{"prompt": "hi"}`))
		req.Header.Set("Content-Type", "text/plain")
		for k, v := range c.header {
			req.Header.Set(k, v)
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.code || resp.Header.Get("X-Content-Type-Options") != "nosniff" ||
			c.code == http.StatusForbidden && !strings.Contains(string(b), `"code":"cross_site_request"`) {
			t.Errorf("%s: status %d, headers %v: %s", c.name, resp.StatusCode, resp.Header, b)
		}
	}
}

// TestProxyUpstreamCredentials: a server without tenants reads no key of
// its own, so the caller's Authorization (and X-Api-Key) goes upstream as
// it is and only base_url changes for an OpenAI client; with tenants the
// caller's Authorization is its tenant key and never goes upstream.
// X-Upstream-Authorization takes precedence either way.
func TestProxyUpstreamCredentials(t *testing.T) {
	type seen struct{ auth, apiKey, upAuth string }
	got := make(chan seen, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("X-Upstream-Authorization")}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Boil water."},"finish_reason":"stop"}]}`)
	}))
	defer up.Close()
	call := func(h *harness, hdr map[string]string) seen {
		t.Helper()
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"How do I make tea?"}]}`))
		req.Header.Set("Content-Type", "application/json")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		return <-got
	}
	// Policies under which nothing flags: the random test model's verdicts
	// are not this test's subject.
	cats := testModel(t).Info().Labels.ResponseCategory
	never := PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}}
	open := newHarness(t, Options{})
	p, err := never.policy()
	if err != nil {
		t.Fatal(err)
	}
	open.srv.tenants.open.Policy = p
	if err := open.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	if s := call(open, map[string]string{"Authorization": "Bearer sk-openai", "X-Api-Key": "sk-ant"}); s != (seen{"Bearer sk-openai", "sk-ant", ""}) {
		t.Errorf("no tenants: upstream saw %+v", s)
	}
	if s := call(open, map[string]string{"Authorization": "Bearer sk-openai", "X-Upstream-Authorization": "Bearer sk-other"}); s != (seen{"Bearer sk-other", "", ""}) {
		t.Errorf("no tenants, X-Upstream-Authorization: upstream saw %+v", s)
	}
	cfg := twoTenants(func(a, b *TenantConfig) { a.Policy = never })
	tenants := newHarness(t, Options{Config: cfg})
	if err := tenants.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	if s := call(tenants, map[string]string{"Authorization": "Bearer key-a", "X-Api-Key": "key-a"}); s != (seen{}) {
		t.Errorf("tenants: upstream saw %+v", s)
	}
	if s := call(tenants, map[string]string{"Authorization": "Bearer key-a", "X-Upstream-Authorization": "sk-openai"}); s != (seen{"Bearer sk-openai", "", ""}) {
		t.Errorf("tenants, X-Upstream-Authorization: upstream saw %+v", s)
	}
}

// TestProxyMountResponses relays the Responses API (POST /v1/responses) to
// the upstream's /v1/responses through the scheduler, with each tenant's
// policy, as it does chat completions.
func TestProxyMountResponses(t *testing.T) {
	m := testModel(t)
	cfg := flagAndPassTenants(m, nil)
	h := newHarness(t, Options{Config: cfg})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/responses" {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"m","output":[{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","text":%q,"annotations":[]}]}]}`, testResponse)
	}))
	t.Cleanup(up.Close)
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	post := func(key string) (int, string) {
		body := fmt.Sprintf(`{"model":"m","input":%q}`, testPrompt)
		req, _ := http.NewRequest("POST", h.ts.URL+"/v1/responses", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("key-a"); code != 400 || !strings.Contains(body, `"param":"input"`) || !strings.Contains(body, "content_filter") {
		t.Fatalf("tenant a: status %d %s", code, body)
	}
	if code, body := post("key-b"); code != 200 || !strings.Contains(body, "three minutes") || !strings.Contains(body, `"id":"resp_1"`) {
		t.Fatalf("tenant b: status %d %s", code, body)
	}
	var sb strings.Builder
	h.srv.metrics.write(&sb)
	if !strings.Contains(sb.String(), `route="responses"`) {
		t.Fatalf("no responses route in the metrics:\n%s", sb.String())
	}
}

// TestProxyNonReaderReleased: a client of the proxy (POST
// /v1/chat/completions, stream: true) that keeps its connection open but
// stops reading is let go after the body idle allowance, as a duplex
// client is (TestDuplexNonReader): a streamed answer has no overall write
// deadline, and a write blocked for good held the guard stream, KV charge,
// tenant connection slot and upstream call (the upstream idle timeout
// never fired, the relay's loop being stuck in the write).
func TestProxyNonReaderReleased(t *testing.T) {
	// An upstream that streams keep-alive comments (1 MiB each) forever,
	// as fast as it is read: the client's buffers fill quickly.
	pad := ": " + strings.Repeat("x", 1<<20) + "\n\n"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		fmt.Fprint(w, "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n")
		for r.Context().Err() == nil {
			if _, err := fmt.Fprint(w, pad); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	}))
	defer up.Close()

	m := testModel(t)
	cfg := flagAndPassTenants(m, func(b *TenantConfig) { b.Proxy.Mode = "pass-through" })
	h := newHarness(t, Options{Config: cfg, BodyIdleTimeout: 200 * time.Millisecond, RequestTimeout: time.Second})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL, IdleTimeout: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", h.ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // lets the stuck relay go at the end (before the harness's cleanup)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	body := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, testPrompt)
	if _, err := fmt.Fprintf(c, "%s%s", postHeader("/v1/chat/completions", "key-b", len(body)), body); err != nil {
		t.Fatal(err)
	}
	// The client never reads. Wait until the request holds its stream.
	var tn *Tenant
	for _, x := range h.srv.tenants.list {
		if x.Name == "b" {
			tn = x
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for tn.open.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the proxied request never opened its stream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Every timeout involved is under a second: a bounded wait of 20 s.
	deadline = time.Now().Add(20 * time.Second)
	for tn.open.Load() != 0 || tn.conns.Load() != 0 {
		if time.Now().After(deadline) {
			used, _ := h.srv.budget.usage()
			t.Fatalf("a proxy client that stopped reading still holds %d streams, %d connection slots and %d KV positions after 20 s (body idle timeout 200ms, upstream idle timeout 500ms)",
				tn.open.Load(), tn.conns.Load(), used)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if used, _ := h.srv.budget.usage(); used != 0 {
		t.Fatalf("%d positions still charged", used)
	}
}
