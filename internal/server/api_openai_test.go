package server

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// TestModels checks GET /v1/models (OpenAI's list shape) and
// GET /v1/models/{model}, behind the tenants' keys.
func TestModels(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil), ModelName: "sg-tiny"})
	var list struct {
		Object string        `json:"object"`
		Data   []modelObject `json:"data"`
	}
	if code, _ := h.do("GET", "/v1/models", "key-a", nil, &list); code != 200 {
		t.Fatalf("status %d", code)
	}
	want := modelObject{ID: "sg-tiny", Object: "model", Created: h.srv.started.Unix(), OwnedBy: "streamguard"}
	if list.Object != "list" || len(list.Data) != 1 || list.Data[0] != want || want.Created <= 0 {
		t.Fatalf("list %+v, want one %+v", list, want)
	}
	var one modelObject
	if code, _ := h.do("GET", "/v1/models/sg-tiny", "key-b", nil, &one); code != 200 || one != want {
		t.Fatalf("retrieve: status %d %+v", code, one)
	}
	var e errBody
	if code, _ := h.do("GET", "/v1/models/gpt-4o", "key-a", nil, &e); code != 404 || e.Error.Code != "model_not_found" || e.Error.Param == nil || *e.Error.Param != "model" {
		t.Fatalf("unknown model: status %d %+v", code, e)
	}
	if code, _ := h.do("GET", "/v1/models", "wrong", nil, &e); code != 401 || e.Error.Code != "invalid_api_key" {
		t.Fatalf("bad key: status %d %+v", code, e)
	}
}

// TestUnknownRoutes checks that 404 and 405 answer OpenAI's error JSON,
// with Allow on 405, that a chat request without --upstream says how to
// enable the proxy, and that the APIs the proxy does not serve say so.
func TestUnknownRoutes(t *testing.T) {
	h := newHarness(t, Options{Config: twoTenants(nil)})
	for _, tc := range []struct {
		method, path string
		code         int
		errCode      string
		msg, allow   string
	}{
		{"GET", "/v1/nope", 404, "not_found", "unknown route: GET /v1/nope", ""},
		{"POST", "/v1/embeddings", 404, "not_found", "unknown route: POST /v1/embeddings", ""},
		{"POST", "/v1/chat/completions", 404, "not_found", "streamguard serve --upstream URL", ""},
		{"POST", "/v1/responses", 404, "not_found", "streamguard serve --upstream URL", ""},
		{"GET", "/v1/responses/resp_1", 404, "not_found", "does not proxy /v1/responses/resp_1", ""},
		{"POST", "/v1/completions", 404, "not_found", "does not proxy /v1/completions", ""},
		{"GET", "/v1/moderations", 405, "method_not_allowed", "method GET is not allowed on /v1/moderations (allowed: POST)", "POST"},
		{"POST", "/v1/models", 405, "method_not_allowed", "is not allowed", "GET, HEAD"},
		{"PUT", "/v1/streams/x", 405, "method_not_allowed", "is not allowed", "DELETE, GET, HEAD"},
	} {
		req, _ := http.NewRequest(tc.method, h.ts.URL+tc.path, strings.NewReader(`{}`))
		req.Header.Set("Authorization", "Bearer key-a")
		resp, err := h.ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e errBody
		decodeBody(t, resp, &e)
		if resp.StatusCode != tc.code || e.Error.Code != tc.errCode || e.Error.Type != "invalid_request_error" || e.Error.Param != nil ||
			!strings.Contains(e.Error.Message, tc.msg) || resp.Header.Get("Allow") != tc.allow || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %+v Allow %q, want %d %s %q Allow %q", tc.method, tc.path, resp.StatusCode, e.Error, resp.Header.Get("Allow"), tc.code, tc.errCode, tc.msg, tc.allow)
		}
	}
	// A path to clean is still redirected, as net/http does.
	req, _ := http.NewRequest("GET", h.ts.URL+"/v1//models", nil)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/v1/models" {
		t.Fatalf("unclean path: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestModerationsOpenAICategories checks the mapping of the model's labels
// to OpenAI's category names on a result that flags everything.
func TestModerationsOpenAICategories(t *testing.T) {
	m := testModel(t)
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0
	}
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Mode: "strict", Debounce: 1, Thresholds: thr}
	})})
	var resp struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": testPrompt}, &resp); code != 200 {
		t.Fatalf("status %d", code)
	}
	r := resp.Results[0]
	pv := r.Qwen3Guard.Prompt
	if !r.Flagged || pv == nil || !pv.Flagged {
		t.Fatalf("not flagged: %+v", r)
	}
	wantKey := map[string]string{
		"Violent": "violence", "Sexual Content or Sexual Acts": "sexual", "Suicide & Self-Harm": "self-harm",
		"Non-violent Illegal Acts": "illicit", "Politically Sensitive Topics": "Politically Sensitive Topics", "PII": "PII",
		"Copyright Violation": "Copyright Violation", "Unethical Acts": "Unethical Acts", "Jailbreak": "Jailbreak",
	}
	if len(r.Qwen3Guard.Categories) != 9 || len(r.Qwen3Guard.CategoryScores) != 9 {
		t.Fatalf("model categories %v", r.Qwen3Guard.Categories)
	}
	for label, key := range wantKey {
		if openAICategory(label) != key {
			t.Errorf("%q maps to %q, want %q", label, openAICategory(label), key)
		}
		if r.Categories[key] != r.Qwen3Guard.Categories[label] || r.CategoryScores[key] != r.Qwen3Guard.CategoryScores[label] {
			t.Errorf("%q: %v %v, model's %q: %v %v", key, r.Categories[key], r.CategoryScores[key], label, r.Qwen3Guard.Categories[label], r.Qwen3Guard.CategoryScores[label])
		}
		if got := r.CategoryAppliedInputTypes[key]; len(got) != 1 || got[0] != "text" {
			t.Errorf("%q applied to %v", key, got)
		}
	}
	// The prompt's category is the one flagged, under its OpenAI name.
	if !r.Categories[openAICategory(pv.Category)] || !r.Qwen3Guard.Categories[pv.Category] {
		t.Errorf("flagged category %q not set: %v", pv.Category, r.Categories)
	}
	// OpenAI's 13 keys are all present; those no label maps to are false, 0.
	for _, c := range openAICategories {
		if _, ok := r.Categories[c]; !ok {
			t.Errorf("OpenAI category %q missing", c)
		}
	}
	for _, c := range []string{"harassment", "hate/threatening", "sexual/minors", "violence/graphic"} {
		if r.Categories[c] || r.CategoryScores[c] != 0 || len(r.CategoryAppliedInputTypes[c]) != 0 {
			t.Errorf("%q: %v %v %v, want false 0 []", c, r.Categories[c], r.CategoryScores[c], r.CategoryAppliedInputTypes[c])
		}
	}
	if len(r.Categories) != 13+5 || len(r.CategoryScores) != 13+5 {
		t.Errorf("%d categories, want OpenAI's 13 and 5 of the model's own", len(r.Categories))
	}
	if r.Categories["Violent"] || r.Categories["violence"] != r.Qwen3Guard.Categories["Violent"] {
		t.Errorf("the model's label is a key of categories: %v", r.Categories)
	}
}

// TestModerationsSkipped checks that image and audio parts are skipped
// with a note, and the text judged as without them.
func TestModerationsSkipped(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{})
	type res struct{ Results []moderationResult }
	img := map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/cat.png"}}
	audio := map[string]any{"type": "input_audio", "input_audio": map[string]any{"data": "aGk=", "format": "wav"}}

	// Text with an image: the text is judged; the image is noted.
	var a res
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": []any{map[string]any{"type": "text", "text": testPrompt}, img}}, &a); code != 200 {
		t.Fatalf("text+image: status %d", code)
	}
	ref, err := m.Moderate(context.Background(), []guard.Message{{Role: "user", Content: testPrompt}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	samePrompt(t, "text+image", a.Results[0].Qwen3Guard.Prompt, ref.Prompt)
	if s := a.Results[0].Qwen3Guard.Skipped; len(s) != 1 || s[0] != "image_url" {
		t.Fatalf("skipped %v, want [image_url]", s)
	}

	// An image alone: nothing judged, not flagged, noted.
	var b res
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": []any{img}}, &b); code != 200 {
		t.Fatalf("image only: status %d", code)
	}
	r := b.Results[0]
	if r.Flagged || r.Qwen3Guard.Prompt != nil || len(r.Qwen3Guard.Skipped) != 1 || r.Qwen3Guard.Skipped[0] != "image_url" ||
		r.CategoryScores["violence"] != 0 || len(r.CategoryAppliedInputTypes["violence"]) != 0 || len(r.Categories) != 18 {
		t.Fatalf("image only: %+v", r)
	}

	// A conversation with a tool call, its result, an audio part: the
	// assistant's turns around the tool result are one, the call written
	// as the template writes it; the tool result after the user turn
	// (neither the user's turn nor the model's answer) is judged as one
	// more user turn after the prompt, as the template lays it out.
	conv := []map[string]any{
		{"role": "user", "content": []any{map[string]any{"type": "text", "text": testPrompt}, audio}},
		{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c1", "type": "function", "function": map[string]any{"name": "f", "arguments": "{}"}}}},
		{"role": "tool", "tool_call_id": "c1", "content": "42"},
		{"role": "assistant", "content": testResponse},
	}
	var c res
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": map[string]any{"messages": conv}}, &c); code != 200 {
		t.Fatalf("tool conversation: status %d", code)
	}
	call := "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>"
	ref, err = m.Moderate(context.Background(), []guard.Message{{Role: "user", Content: testPrompt}, {Role: "assistant", Content: call + "\n" + testResponse}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r = c.Results[0]
	samePrompt(t, "tool conversation", r.Qwen3Guard.Prompt, ref.Prompt)
	if r.Qwen3Guard.Response == nil || r.Qwen3Guard.Response.Tokens != len(ref.Tokens) {
		t.Fatalf("response %+v, want %d tokens", r.Qwen3Guard.Response, len(ref.Tokens))
	}
	if s := strings.Join(r.Qwen3Guard.Skipped, ","); s != "input_audio" {
		t.Fatalf("skipped %q, want input_audio", s)
	}
	ref, err = m.Moderate(context.Background(), []guard.Message{{Role: "user", Content: testPrompt}, {Role: "tool", Content: "42"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	samePrompt(t, "tool results", r.Qwen3Guard.ToolResults, ref.Prompt)
}

// TestLiteLLMSkipped checks that LiteLLM's images are noted in
// X-Streamguard-Skipped, as /v1/moderations notes them; its tool messages
// are judged.
func TestLiteLLMSkipped(t *testing.T) {
	h := newHarness(t, Options{})
	structured := []map[string]any{
		{"role": "user", "content": testPrompt},
		{"role": "tool", "content": "42", "tool_call_id": "x"},
	}
	var resp litellmResponse
	code, hdr := h.do("POST", "/beta/litellm_basic_guardrail_api", "", map[string]any{"texts": []string{"x"}, "images": []string{"aGk="}, "structured_messages": structured, "input_type": "request"}, &resp)
	if code != 200 || hdr.Get("X-Streamguard-Skipped") != "images" {
		t.Fatalf("status %d, skipped %q", code, hdr.Get("X-Streamguard-Skipped"))
	}
	code, hdr = h.do("POST", "/beta/litellm_basic_guardrail_api", "", map[string]any{"texts": []string{"x"}, "input_type": "request"}, &resp)
	if code != 200 || hdr.Get("X-Streamguard-Skipped") != "" {
		t.Fatalf("status %d, skipped %q", code, hdr.Get("X-Streamguard-Skipped"))
	}
}

func decodeBody(t *testing.T, resp *http.Response, out any) {
	t.Helper()
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("status %d: %v", resp.StatusCode, err)
	}
}
