package server

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestParseConfigErrors(t *testing.T) {
	good := HashKey("k")
	for _, tc := range []struct{ cfg, msg string }{
		{`{"tenants": []}`, "no tenants"},
		{`{"tenants": [{"name": "", "api_key_sha256": ["` + good + `"]}]}`, "name is empty"},
		{`{"tenants": [{"name": "a", "api_key_sha256": []}]}`, "api_key_sha256 is empty"},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["secret"]}]}`, "not 64 hex digits"},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"]}, {"name": "a", "api_key_sha256": ["` + HashKey("j") + `"]}]}`, "duplicate tenant name"},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"]}, {"name": "b", "api_key_sha256": ["` + strings.ToUpper(good) + `"]}]}`, `also a key of tenant "a"`},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "policy": {"mode": "lax"}}]}`, `mode "lax"`},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "max_streams": -1}]}`, "max_streams -1"},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "proxy": {"mode": "yolo"}}]}`, `proxy.mode "yolo"`},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "colour": "red"}]}`, `unknown field "colour"`},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"]}]} {}`, "after the JSON object"},
		// What `printf %s "$KEY" | sha256sum` prints with $KEY unset:
		// authenticate refuses an empty key, so it could never match.
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + HashKey("") + `"]}]}`, "SHA-256 of an empty key"},
		{`{"tenants": [{"name": "-", "api_key_sha256": ["` + good + `"]}]}`, `the name "-" stands for unauthenticated requests`},
		{`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "rate_limit": {"burst": 5}}]}`, "burst 5 without requests_per_second"},
	} {
		if _, err := ParseConfig([]byte(tc.cfg)); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: error %v, want %q", tc.cfg, err, tc.msg)
		}
	}
	c, err := ParseConfig([]byte(`{"tenants": [{"name": "a", "api_key_sha256": ["` + good + `"], "policy": {"mode": "loose", "debounce": 3}, "rate_limit": {"requests_per_second": 5, "burst": 10}, "max_streams": 4}]}`))
	if err != nil || c.Tenants[0].Policy.Debounce != 3 || c.Tenants[0].RateLimit.Burst != 10 {
		t.Fatalf("%+v %v", c, err)
	}
	// Policies are checked against the model's labels.
	_, err = newTenants(twoTenants(func(a, b *TenantConfig) { a.Policy.Block = []string{"Weather"} }), testModel(t))
	if err == nil || !strings.Contains(err.Error(), `"Weather"`) || !strings.Contains(err.Error(), `tenants[0] ("a")`) {
		t.Fatalf("error %v", err)
	}
}

// TestParseConfigRefusesCaseVariantKeys: DisallowUnknownFields passes a
// key that matches a field only when case is ignored, and encoding/json
// keeps the last of repeated keys, so "LOG_CONTENT": true after
// "log_content": false would turn content logging on. Both are refused.
func TestParseConfigRefusesCaseVariantKeys(t *testing.T) {
	tenant := `{"name": "a", "api_key_sha256": ["` + HashKey("k") + `"], `
	for _, tc := range []struct{ cfg, want string }{
		{`{"tenants": [` + tenant + `"log_content": false, "LOG_CONTENT": true}]}`,
			`tenant config: key "LOG_CONTENT" in "tenants[0]" matches the field "log_content" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"tenants": [` + tenant + `"log_content": false, "log_content": true}]}`,
			`tenant config: key "log_content" in "tenants[0]" appears twice: readers differ on which value counts`},
		{`{"tenants": [` + tenant + `"proxy": {"Fail_Open": true}}]}`,
			`tenant config: key "Fail_Open" in "tenants[0].proxy" matches the field "fail_open" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"tenants": [` + tenant + `"policy": {"thresholds": {"Violent": 0.9, "Violent": 0.1}}}]}`,
			`tenant config: key "Violent" in "tenants[0].policy.thresholds" appears twice: readers differ on which value counts`},
	} {
		c, err := ParseConfig([]byte(tc.cfg))
		if err == nil || err.Error() != tc.want {
			t.Errorf("ParseConfig(%s) = %+v, %v\nwant error %s", tc.cfg, c, err, tc.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"tenants": [{"name": "a", "api_key_sha256": ["` + HashKey("k") + `"], "policy": {"mode": "strict"}}]}`))
	f.Add([]byte(`{"tenants": [{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			return
		}
		for _, tc := range c.Tenants {
			if tc.Name == "" || len(tc.APIKeySHA256) == 0 {
				t.Fatalf("accepted tenant %+v", tc)
			}
		}
	})
}

// TestAuthAndIsolation: keys are required, both header forms work, and a
// tenant cannot read, append to or close another tenant's stream.
func TestAuthAndIsolation(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	var e errBody
	if code, hdr := h.do("POST", "/v1/streams", "", map[string]any{"prompt": "hi"}, &e); code != 401 || hdr.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: status %d", code)
	}
	if code, _ := h.do("POST", "/v1/streams", "key-c", map[string]any{"prompt": "hi"}, &e); code != 401 {
		t.Fatalf("unknown key: status %d", code)
	}
	var a streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &a); code != 201 {
		t.Fatalf("tenant a: status %d", code)
	}
	for _, op := range []struct{ method, path string }{{"GET", ""}, {"POST", "/append"}, {"POST", "/flush"}, {"DELETE", ""}} {
		e = errBody{}
		if code, _ := h.do(op.method, "/v1/streams/"+a.ID+op.path, "key-b", map[string]any{"text": "x"}, &e); code != 404 || e.Error.Code != "stream_lost" {
			t.Errorf("tenant b %s %s: status %d %+v", op.method, op.path, code, e.Error)
		}
	}
	req, _ := http.NewRequest("GET", h.ts.URL+"/v1/streams/"+a.ID, nil)
	req.Header.Set("x-api-key", "key-a")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("x-api-key: status %d", resp.StatusCode)
	}
	var info infoResponse
	if code, _ := h.do("GET", "/v1/info", "key-b", nil, &info); code != 200 || info.Tenant != "b" || len(info.Categories) != len(testModel(t).Info().Labels.ResponseCategory) {
		t.Fatalf("info: status %d %+v", code, info)
	}
}

func TestAuthenticateConstantTimeAll(t *testing.T) {
	ts, err := newTenants(twoTenants(func(a, b *TenantConfig) { b.APIKeySHA256 = append(b.APIKeySHA256, HashKey("key-b2")) }), testModel(t))
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"key-a": "a", "key-b": "b", "key-b2": "b", "key-": "", "": ""} {
		got := ts.authenticate(key)
		if (got == nil && want != "") || (got != nil && got.Name != want) {
			t.Errorf("key %q: tenant %v, want %q", key, got, want)
		}
	}
}

func TestRateLimit(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.RateLimit = RateConfig{RequestsPerSecond: 0.01, Burst: 2} })})
	for i := range 2 {
		if code, _ := h.do("GET", "/v1/info", "key-a", nil, nil); code != 200 {
			t.Fatalf("request %d: status %d", i, code)
		}
	}
	var e errBody
	code, hdr := h.do("GET", "/v1/info", "key-a", nil, &e)
	if code != 429 || e.Error.Code != "rate_limit" || hdr.Get("Retry-After") == "" {
		t.Fatalf("third request: status %d %+v retry-after %q", code, e.Error, hdr.Get("Retry-After"))
	}
	// Tenant b has no limit and is not affected.
	if code, _ := h.do("GET", "/v1/info", "key-b", nil, nil); code != 200 {
		t.Fatalf("tenant b: status %d", code)
	}
}

func TestRateLimiterRefills(t *testing.T) {
	l := newRateLimiter(2, 1)
	t0 := time.Unix(1000, 0)
	if ok, _ := l.allow(t0); !ok {
		t.Fatal("first request refused")
	}
	ok, wait := l.allow(t0)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("second request: ok %v wait %v, want a refusal for 500ms", ok, wait)
	}
	if ok, _ := l.allow(t0.Add(500 * time.Millisecond)); !ok {
		t.Fatal("refused after the refill time")
	}
}

func TestStreamLimit(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.MaxStreams = 1 })})
	var s1 streamResponse
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &s1); code != 201 {
		t.Fatalf("first: status %d", code)
	}
	var e errBody
	if code, hdr := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, &e); code != 429 || e.Error.Code != "stream_limit" || hdr.Get("Retry-After") == "" {
		t.Fatalf("second: status %d %+v", code, e.Error)
	}
	if code, _ := h.do("POST", "/v1/streams", "key-b", map[string]any{"prompt": "hi"}, nil); code != 201 {
		t.Fatalf("other tenant: status %d", code)
	}
	h.do("DELETE", "/v1/streams/"+s1.ID, "key-a", nil, nil)
	if code, _ := h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "hi"}, nil); code != 201 {
		t.Fatalf("after close: status %d", code)
	}
}

// TestAuditContent: content appears in the audit log only for a tenant
// with log_content.
func TestAuditContent(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) { a.LogContent = true })})
	h.do("POST", "/v1/streams", "key-a", map[string]any{"prompt": "secret-a"}, nil)
	h.do("POST", "/v1/streams", "key-b", map[string]any{"prompt": "secret-b"}, nil)
	log := h.audit.String()
	if !strings.Contains(log, "secret-a") || strings.Contains(log, "secret-b") || !strings.Contains(log, `"tenant":"b"`) {
		t.Fatalf("audit log:\n%s", log)
	}
}

// TestEveryTurnPolicy: a tenant's "every_turn" reaches its streams'
// policy, so that each user turn a client sends is judged.
func TestEveryTurnPolicy(t *testing.T) {
	cfg, err := ParseConfig([]byte(`{"tenants":[{"name":"a","api_key_sha256":["` + strings.Repeat("0", 64) + `"],"policy":{"every_turn":true}},` +
		`{"name":"b","api_key_sha256":["` + strings.Repeat("1", 64) + `"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		p, err := cfg.Tenants[i].Policy.policy()
		if err != nil || p.EveryTurn != want {
			t.Errorf("tenant %s: EveryTurn %v, %v; want %v", cfg.Tenants[i].Name, p.EveryTurn, err, want)
		}
	}
}
