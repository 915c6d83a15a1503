package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

const review2Payload = "SECRETPAYLOAD"

// TestNestedTypeValuesJudged: the SGLang tool-call shape (name null,
// arguments an object) is read by every surface through chatmsg: a value
// under a nested "type" key is judged, in LiteLLM's tool_calls and in
// /v1/moderations' messages.
func TestNestedTypeValuesJudged(t *testing.T) {
	call := `{"id":"c","type":"function","function":{"name":null,"arguments":{"type":"` + review2Payload + `"}}}`
	var req litellmRequest
	body := `{"input_type":"request","texts":["Hi"],"tool_calls":[` + call + `],"structured_messages":[{"role":"user","content":"Hi"}]}`
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		t.Fatal(err)
	}
	convs, _, _, err := litellmConversations(&req)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(convs), review2Payload) {
		t.Errorf("LiteLLM: tool_calls payload never judged: %q", convs)
	}
	in, err := parseModerationInput(json.RawMessage(`[{"messages":[{"role":"user","content":"Hi"},{"role":"assistant","content":null,"tool_calls":[` + call + `]}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(fmt.Sprint(in[0].msgs), review2Payload) {
		t.Errorf("/v1/moderations: tool call payload never judged: %q", in[0].msgs)
	}
}

// TestToolDefinitionsLongerThanTheStream: for a tenant that trims long
// input, an agent request whose tool definitions are longer than the
// guard's stream (its messages short) is judged, the definitions in as
// many turns as they need (up to eight), not refused.
func TestToolDefinitionsLongerThanTheStream(t *testing.T) {
	h := trimmingProxy(t)
	var tools []string
	for i := range 40 {
		tools = append(tools, fmt.Sprintf(`{"type":"function","function":{"name":"tool_%d","description":"Looks up the record number %d in the inventory database and returns it.","parameters":{"type":"object","properties":{"id":{"type":"string"}}}}}`, i, i))
	}
	body := `{"model":"m","tools":[` + strings.Join(tools, ",") + `],"messages":[{"role":"user","content":"What is in record 7?"}]}`
	var e errBody
	code, _ := h.do("POST", "/v1/chat/completions", "key-a", body, &e)
	if code != 200 {
		t.Errorf("short agent request with 40 tools: status %d %s: %s", code, e.Error.Code, e.Error.Message)
	}
}

// TestLiteLLMOneStreamAtATime: an agent request's tool result is judged on
// a second stream after the first, not beside it: a tenant with
// max_streams 1 can send one.
func TestLiteLLMOneStreamAtATime(t *testing.T) {
	cfg := &Config{Tenants: []TenantConfig{{Name: "a", APIKeySHA256: []string{HashKey("key-a")}, MaxStreams: 1}}}
	h := newHarness(t, Options{Config: cfg})
	body := `{"input_type":"request","texts":["What is the weather?","sunny"],` +
		`"structured_messages":[{"role":"user","content":"What is the weather?"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"weather","arguments":"{}"}}]},` +
		`{"role":"tool","tool_call_id":"c","content":"sunny"}]}`
	refused := 0
	var e errBody
	for range 20 {
		if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a", body, &e); code != 200 {
			refused++
		}
	}
	if refused > 0 {
		t.Errorf("LiteLLM agent request, max_streams 1, no other request in flight: %d of 20 refused (%s: %s)", refused, e.Error.Code, e.Error.Message)
	}
}

// TestUpstreamRedirectNotFollowed: without tenants the caller's X-Api-Key
// goes upstream, and net/http drops Authorization on a redirect to
// another host, not X-Api-Key: the proxy follows no redirect, so an
// upstream that redirects (compromised, misconfigured, a moved endpoint)
// hands the caller's key to no other host.
func TestUpstreamRedirectNotFollowed(t *testing.T) {
	leaked := make(chan [2]string, 1)
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked <- [2]string{r.Header.Get("X-Api-Key"), r.Header.Get("Authorization")}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}`)
	}))
	defer other.Close()
	u, _ := url.Parse(other.URL)
	elsewhere := "http://localhost:" + u.Port() + "/v1/chat/completions" // another host name
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere, http.StatusTemporaryRedirect)
	}))
	defer up.Close()
	cats := testModel(t).Info().Labels.ResponseCategory
	never := PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}}
	h := newHarness(t, Options{})
	p, _ := never.policy()
	h.srv.tenants.open.Policy = p
	if err := h.srv.MountProxy(ProxyOptions{Upstream: up.URL}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"How do I make tea?"}]}`))
	req.Header.Set("X-Api-Key", "sk-ant-secret")
	req.Header.Set("Authorization", "Bearer sk-openai-secret")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case s := <-leaked:
		t.Errorf("the redirect target got X-Api-Key %q, Authorization %q (status %d)", s[0], s[1], resp.StatusCode)
	default:
	}
}

// TestEchoedReasoningDoesNotAccumulate: clients send an assistant message
// back as they got it (OpenRouter and vLLM answers carry "reasoning");
// the reasoning before the last query is context, as the template has
// it, not one more judged turn that grows with the chat until every
// request is refused.
func TestEchoedReasoningDoesNotAccumulate(t *testing.T) {
	h := trimmingProxy(t)
	var msgs []string
	for i := range 12 {
		msgs = append(msgs, fmt.Sprintf(`{"role":"user","content":"Question %d?"}`, i),
			fmt.Sprintf(`{"role":"assistant","content":"Answer %d.","reasoning":"%s"}`, i, strings.Repeat("Let me think about this step by step. ", 8)))
	}
	msgs = append(msgs, `{"role":"user","content":"Thanks!"}`)
	body := `{"model":"m","messages":[` + strings.Join(msgs, ",") + `]}`
	var e errBody
	if code, _ := h.do("POST", "/v1/chat/completions", "key-a", body, &e); code != 200 {
		t.Errorf("12-turn chat with echoed reasoning: status %d %s: %.160s", code, e.Error.Code, e.Error.Message)
	}
}

// trimmingProxy is a proxy with a 512-token guard stream for tenant a
// (key-a), which trims long input, fails open and flags nothing the
// random model says.
func trimmingProxy(t *testing.T) *harness {
	t.Helper()
	m := testModel(t)
	thr := map[string]float32{}
	for _, c := range append(append([]string(nil), m.Info().Labels.QueryCategory...), m.Info().Labels.ResponseCategory...) {
		thr[c] = 1
	}
	cfg := &Config{Tenants: []TenantConfig{{Name: "a", APIKeySHA256: []string{HashKey("key-a")},
		Policy: PolicyConfig{Mode: "strict", Thresholds: thr},
		Proxy:  ProxyConfig{TrimLongPrompt: true, FailOpen: true}}}}
	h := newHarness(t, Options{Config: cfg, MaxStreamTokens: 512})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: fakeUpstream(t).URL}); err != nil {
		t.Fatal(err)
	}
	return h
}
