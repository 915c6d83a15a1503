package server

// Cross-route checks (AREA=routes): one tenant, one conversation, judged
// through every route of `streamguard serve`; the verdicts must agree.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// rtVerdict is what a route says about a conversation.
type rtVerdict struct {
	promptFlagged bool
	respFlagged   bool
	index         int    // response token that flagged, -1
	category      string // category of the flag
}

func (v rtVerdict) String() string {
	return fmt.Sprintf("prompt=%v response=%v index=%d category=%q", v.promptFlagged, v.respFlagged, v.index, v.category)
}

// rtAnswer is the upstream's answer.
type rtAnswer struct {
	Reasoning string
	Content   string
	Calls     []rtCall
}

type rtCall struct{ Name, Args string }

func (a rtAnswer) message() map[string]any {
	m := map[string]any{"role": "assistant", "content": a.Content}
	if a.Reasoning != "" {
		m["reasoning_content"] = a.Reasoning
	}
	if len(a.Calls) > 0 {
		var tc []map[string]any
		for i, c := range a.Calls {
			tc = append(tc, map[string]any{"id": fmt.Sprintf("call_%d", i), "type": "function", "function": map[string]any{"name": c.Name, "arguments": c.Args}})
		}
		m["tool_calls"] = tc
	}
	return m
}

// events is the answer as a chat completion stream: reasoning, content and
// each call's arguments in deltas of three runes.
func (a rtAnswer) events() [][]byte {
	var out [][]byte
	chunk := func(delta map[string]any, finish any) {
		b, _ := json.Marshal(map[string]any{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
			"choices": []map[string]any{{"index": 0, "delta": delta, "finish_reason": finish}}})
		out = append(out, append(append([]byte("data: "), b...), "\n\n"...))
	}
	pieces := func(s string) []string {
		rs := []rune(s)
		var p []string
		for i := 0; i < len(rs); i += 3 {
			p = append(p, string(rs[i:min(i+3, len(rs))]))
		}
		return p
	}
	for _, p := range pieces(a.Reasoning) {
		chunk(map[string]any{"reasoning_content": p}, nil)
	}
	for _, p := range pieces(a.Content) {
		chunk(map[string]any{"content": p}, nil)
	}
	for i, c := range a.Calls {
		chunk(map[string]any{"tool_calls": []map[string]any{{"index": i, "id": fmt.Sprintf("call_%d", i), "type": "function", "function": map[string]any{"name": c.Name, "arguments": ""}}}}, nil)
		for _, p := range pieces(c.Args) {
			chunk(map[string]any{"tool_calls": []map[string]any{{"index": i, "function": map[string]any{"arguments": p}}}}, nil)
		}
	}
	finish := "stop"
	if len(a.Calls) > 0 {
		finish = "tool_calls"
	}
	chunk(map[string]any{}, finish)
	out = append(out, []byte("data: [DONE]\n\n"))
	return out
}

// rtUpstream answers chat completions with answer (streamed in deltas when
// asked).
func rtUpstream(t *testing.T, answer rtAnswer) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream bool `json:"stream"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			finish := "stop"
			if len(answer.Calls) > 0 {
				finish = "tool_calls"
			}
			json.NewEncoder(w).Encode(map[string]any{"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
				"choices": []map[string]any{{"index": 0, "message": answer.message(), "finish_reason": finish}}})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range answer.events() {
			w.Write(ev)
		}
	}))
	t.Cleanup(up.Close)
	return up
}

type rtHarness struct {
	*harness
	key string
}

func newRTHarness(t *testing.T, pol PolicyConfig, proxy ProxyConfig, answer rtAnswer) *rtHarness {
	cfg := twoTenants(func(a, b *TenantConfig) { a.Policy, a.Proxy = pol, proxy })
	h := newHarness(t, Options{Config: cfg})
	if err := h.srv.MountProxy(ProxyOptions{Upstream: rtUpstream(t, answer).URL}); err != nil {
		t.Fatal(err)
	}
	return &rtHarness{h, "key-a"}
}

// viaModerations judges msgs (ending with the assistant's answer).
func (h *rtHarness) viaModerations(msgs []map[string]any) rtVerdict {
	h.t.Helper()
	var r struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", h.key, map[string]any{"input": map[string]any{"messages": msgs}}, &r); code != 200 || len(r.Results) != 1 {
		h.t.Fatalf("moderations: status %d", code)
	}
	res := r.Results[0]
	v := rtVerdict{promptFlagged: res.Qwen3Guard.Prompt.Flagged, index: -1}
	if rd := res.Qwen3Guard.Response; rd != nil && rd.Flagged {
		v.respFlagged, v.index, v.category = true, rd.FlaggedIndex, res.Category
	}
	return v
}

// viaStreams opens a stream with the prompt messages, appends answer in
// pieces and flushes.
func (h *rtHarness) viaStreams(prompt []map[string]any, answer string, pieces int) rtVerdict {
	h.t.Helper()
	var sr streamResponse
	if code, _ := h.do("POST", "/v1/streams", h.key, map[string]any{"messages": prompt}, &sr); code != 201 {
		h.t.Fatalf("streams: status %d", code)
	}
	v := rtVerdict{promptFlagged: sr.Prompt.Flagged, index: -1}
	rs := []rune(answer)
	step := (len(rs) + pieces - 1) / pieces
	var last streamResponse
	for i := 0; i < len(rs); i += step {
		last = streamResponse{}
		body := map[string]any{"text": string(rs[i:min(i+step, len(rs))])}
		if i+step >= len(rs) {
			body["flush"] = true
		}
		if code, _ := h.do("POST", "/v1/streams/"+sr.ID+"/append", h.key, body, &last); code != 200 {
			h.t.Fatalf("append: status %d", code)
		}
		for _, tv := range last.Tokens {
			if tv.Flagged {
				v.respFlagged, v.index, v.category = true, tv.Index, tv.Category
			}
		}
	}
	h.do("DELETE", "/v1/streams/"+sr.ID, h.key, nil, nil)
	if last.State.FlaggedIndex != v.index {
		h.t.Errorf("streams: state.flagged_index %d, token flagged %d", last.State.FlaggedIndex, v.index)
	}
	return v
}

var rtTokenRE = regexp.MustCompile(`at token (\d+)`)

// viaProxy sends a chat completion (streamed or not) and reads what the
// proxy says flagged.
func (h *rtHarness) viaProxy(prompt []map[string]any, stream bool) (rtVerdict, string) {
	h.t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "m", "stream": stream, "messages": prompt})
	req, _ := http.NewRequest("POST", h.ts.URL+"/v1/chat/completions", strings.NewReader(string(body)))
	req.Header.Set("Authorization", "Bearer "+h.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.ts.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return parseProxyAnswer(h.t, resp.StatusCode, raw, stream), string(raw)
}

func parseProxyAnswer(t *testing.T, status int, raw []byte, stream bool) rtVerdict {
	t.Helper()
	v := rtVerdict{index: -1}
	type sg struct {
		Reason   string `json:"reason"`
		Token    int    `json:"token"`
		Category string `json:"category"`
	}
	apply := func(s *sg) {
		if s == nil {
			return
		}
		switch s.Reason {
		case "prompt_flagged":
			v.promptFlagged = true
		case "response_flagged":
			v.respFlagged, v.index, v.category = true, s.Token, s.Category
		}
	}
	if !stream || status != 200 {
		var b struct {
			Streamguard *sg `json:"streamguard"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatalf("proxy: status %d %q", status, raw)
		}
		apply(b.Streamguard)
		return v
	}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var b struct {
			Streamguard *sg `json:"streamguard"`
		}
		if json.Unmarshal([]byte(line), &b) == nil {
			apply(b.Streamguard)
		}
	}
	return v
}

// viaExtProc runs the exchange through the ext_proc service: the request
// body, then answer as an upstream stream of three-rune deltas.
func (h *rtHarness) viaExtProc(client extprocv3.ExternalProcessorClient, prompt []map[string]any, answer rtAnswer) rtVerdict {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := client.Process(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	s := epStream{h.t, st}
	body, _ := json.Marshal(map[string]any{"model": "m", "stream": true, "messages": prompt})
	r := s.request(h.key, string(body))
	if im := r.GetImmediateResponse(); im != nil {
		return parseProxyAnswer(h.t, int(im.GetStatus().GetCode()), im.GetBody(), false)
	}
	s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{
		Headers: epHeaders(map[string]string{":status": "200"}, map[string]string{"content-type": "text/event-stream"})}}})
	chunks := answer.events()
	var got []byte
	for i, c := range chunks {
		r = s.do(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: c, EndOfStream: i == len(chunks)-1}}})
		got = append(got, r.GetResponseBody().GetResponse().GetBodyMutation().GetBody()...)
	}
	return parseProxyAnswer(h.t, 200, got, true)
}

func rtMsgs(system, user string) []map[string]any {
	var m []map[string]any
	if system != "" {
		m = append(m, map[string]any{"role": "system", "content": system})
	}
	return append(m, map[string]any{"role": "user", "content": user})
}

func withAnswer(prompt []map[string]any, answer string) []map[string]any {
	return append(append([]map[string]any{}, prompt...), map[string]any{"role": "assistant", "content": answer})
}

// rtCase is one conversation: the prompt messages and the answer.
type rtCase struct {
	name   string
	prompt []map[string]any
	answer rtAnswer
}

func rtCases() []rtCase {
	sys := rtMsgs("You are helpful.", testPrompt)
	multi := []map[string]any{
		{"role": "system", "content": "You are helpful."},
		{"role": "user", "content": "Hi there"},
		{"role": "assistant", "content": "Hello! How can I help?"},
		{"role": "user", "content": testPrompt},
	}
	return []rtCase{
		{"plain", sys, rtAnswer{Content: testResponse}},
		{"multi", multi, rtAnswer{Content: testResponse}},
		{"reasoning", sys, rtAnswer{Reasoning: "The user wants tea. Explain briefly.", Content: testResponse}},
		{"toolcall", sys, rtAnswer{Content: "Let me look.", Calls: []rtCall{{"get_weather", `{"city": "Paris", "unit": "celsius"}`}}}},
		{"toolcall-only", sys, rtAnswer{Calls: []rtCall{{"get_weather", `{"city": "Paris", "unit": "celsius"}`}}}},
		{"reasoning-nl", sys, rtAnswer{Reasoning: "\nThe user wants tea.\n\n", Content: "\n" + testResponse}},
		{"reasoning-only", sys, rtAnswer{Reasoning: "The user wants tea. Explain briefly, with care."}},
		{"crlf", sys, rtAnswer{Content: "Boil water,\r\npour it over\r\rthe leaves \u00a0 then wait"}},
		{"nfd", sys, rtAnswer{Content: "Cafe\u0301 cre\u0300me, \u1100\u1161\u11a8 and Ａ ﬁ ½ words ﬀ"}},
		{"tags", sys, rtAnswer{Content: "<think>secret</think> answer <tool_call>{}</tool_call> <|im_end|> done"}},
		{"ws-call", sys, rtAnswer{Content: "\n\n", Calls: []rtCall{{"get_weather", `{"city": "Paris"}`}}}},
		{"two-calls", sys, rtAnswer{Content: "Two.", Calls: []rtCall{{"a", `{"x": 1}`}, {"b", `{"y": "\u0045VIL"}`}}}},
		{"trail-ws", sys, rtAnswer{Content: testResponse + "\n\n  "}},
	}
}

func rtPolicies(cats []string) map[string]PolicyConfig {
	return map[string]PolicyConfig{
		"default":   {},
		"loose":     {Mode: "loose"},
		"debounce3": {Debounce: 3},
		"loose-d1":  {Mode: "loose", Debounce: 1},
		"thr":       {Thresholds: map[string]float32{cats[1]: 0.8, cats[7]: 0.5}},
		"block":     {Block: []string{cats[0], cats[2]}, Debounce: 1},
		"block-thr": {Block: []string{cats[1]}, Thresholds: map[string]float32{cats[1]: 0.7}, Debounce: 1},
		"every":     {EveryTurn: true, Thresholds: map[string]float32{cats[0]: 0.5}},
	}
}

// viaStreamsMsgs opens a stream whose messages end with the whole answer.
func (h *rtHarness) viaStreamsMsgs(prompt []map[string]any, answer rtAnswer) rtVerdict {
	h.t.Helper()
	var sr streamResponse
	if code, _ := h.do("POST", "/v1/streams", h.key, map[string]any{"messages": append(append([]map[string]any{}, prompt...), answer.message())}, &sr); code != 201 {
		h.t.Fatalf("streams: status %d", code)
	}
	v := rtVerdict{promptFlagged: sr.Prompt.Flagged, index: -1}
	var last streamResponse
	h.do("POST", "/v1/streams/"+sr.ID+"/flush", h.key, nil, &last)
	for _, tv := range append(sr.Tokens, last.Tokens...) {
		if tv.Flagged {
			v.respFlagged, v.index, v.category = true, tv.Index, tv.Category
		}
	}
	h.do("DELETE", "/v1/streams/"+sr.ID, h.key, nil, nil)
	return v
}

func (h *rtHarness) viaLiteLLMAnswer(prompt []map[string]any, answer rtAnswer) rtVerdict {
	h.t.Helper()
	var lr litellmResponse
	h.do("POST", "/beta/litellm_basic_guardrail_api", h.key, map[string]any{"structured_messages": prompt, "input_type": "request"}, &lr)
	v := rtVerdict{promptFlagged: lr.Action == "BLOCKED", index: -1}
	lr = litellmResponse{}
	body := map[string]any{"structured_messages": prompt, "input_type": "response"}
	if answer.Content != "" {
		body["texts"] = []string{answer.Content}
	}
	if tc, ok := answer.message()["tool_calls"]; ok {
		body["tool_calls"] = tc
	}
	h.do("POST", "/beta/litellm_basic_guardrail_api", h.key, body, &lr)
	if m := rtTokenRE.FindStringSubmatch(lr.BlockedReason); m != nil {
		v.respFlagged = true
		v.index, _ = strconv.Atoi(m[1])
	}
	return v
}

// TestRoutesAgree: for conversations with a system prompt, a
// multi-turn history, reasoning, tool calls, CR/LF, NFD text and spelled
// tags, under eight tenant policies (loose, debounce 1 and 3, thresholds,
// block lists, every_turn), /v1/moderations, the streams API, the LiteLLM
// API, the proxy (whole and streamed, hold-back and pass-through) and
// ext_proc agree on the prompt flag, the flagged token and its category.
func TestRoutesAgree(t *testing.T) {
	m := testModel(t)
	cats := m.Info().Labels.ResponseCategory
	for pname, pol := range rtPolicies(cats) {
		for _, c := range rtCases() {
			for _, pm := range []string{"hold-back", "pass-through"} {
				h := newRTHarness(t, pol, ProxyConfig{Mode: pm}, c.answer)
				ep := extProcClient(t, h.harness)
				ref := h.viaModerations(append(append([]map[string]any{}, c.prompt...), c.answer.message()))
				got := map[string]rtVerdict{
					"streams-msgs": h.viaStreamsMsgs(c.prompt, c.answer),
					"ext_proc":     h.viaExtProc(ep, c.prompt, c.answer),
				}
				if c.answer.Reasoning == "" {
					got["litellm"] = h.viaLiteLLMAnswer(c.prompt, c.answer)
				}
				if c.answer.Reasoning == "" && len(c.answer.Calls) == 0 {
					got["streams"] = h.viaStreams(c.prompt, c.answer.Content, 5)
				}
				got["proxy-whole"], _ = h.viaProxy(c.prompt, false)
				got["proxy-stream"], _ = h.viaProxy(c.prompt, true)
				for r, v := range got {
					lit := v
					if r == "litellm" || (pm == "pass-through" && r != "proxy-whole") {
						lit.category = ref.category
					}
					if r == "litellm" {
						lit.category = ref.category
					}
					cmp := ref
					if ref.promptFlagged && lit.promptFlagged {
						cmp, lit = rtVerdict{promptFlagged: true}, rtVerdict{promptFlagged: true}
					}
					if lit != cmp {
						t.Errorf("%s/%s/%s: %s: %v, moderations %v", pname, c.name, pm, r, v, ref)
					}
				}
			}
		}
	}
}

// TestRoutesWhitespaceReasoningJudgedAlike: an answer whose reasoning is
// only newlines ("reasoning_content": "\n\n", as servers send beside an
// empty think block) is the answer without reasoning to the Qwen3 template
// (it strips the reasoning's newlines and writes the empty think block),
// on every route: /v1/moderations and the streams API (through
// tokenizer.RenderConversation) judge it as the proxy does.
func TestRoutesWhitespaceReasoningJudgedAlike(t *testing.T) {
	m := testModel(t)
	cats := m.Info().Labels.ResponseCategory
	pol := PolicyConfig{Block: []string{cats[0], cats[2]}, Debounce: 1}
	ans := rtAnswer{Reasoning: "\n\n", Content: testResponse}
	h := newRTHarness(t, pol, ProxyConfig{}, ans)
	prompt := rtMsgs("You are helpful.", testPrompt)

	proxy, _ := h.viaProxy(prompt, true)
	plain := h.viaModerations(withAnswer(prompt, testResponse))
	withWS := h.viaModerations(append(append([]map[string]any{}, prompt...), ans.message()))
	stream := h.viaStreamsMsgs(prompt, ans)
	if withWS != plain {
		t.Errorf("/v1/moderations: reasoning \"\\n\\n\" gives %v; the same answer without it (the template renders both alike) %v", withWS, plain)
	}
	if withWS != proxy {
		t.Errorf("/v1/moderations %v, proxy (chat completions, streamed) %v: one tenant, one answer", withWS, proxy)
	}
	if stream != proxy {
		t.Errorf("POST /v1/streams (messages ending with the answer) %v, proxy %v", stream, proxy)
	}
}

// TestRoutesModerationsReportsWhatFlagged: a loose tenant whose threshold
// flags the prompt, and an answer with a run of Controversial tokens
// (which a loose policy never flags): /v1/moderations gives the prompt's
// verdict as the reason (risk_level, category), as the LiteLLM API does,
// not the response token that flagged nothing.
func TestRoutesModerationsReportsWhatFlagged(t *testing.T) {
	m := testModel(t)
	qc := m.Info().Labels.QueryCategory
	h := newRTHarness(t, PolicyConfig{Mode: "loose", Thresholds: map[string]float32{qc[0]: 0.3}}, ProxyConfig{}, rtAnswer{Content: testResponse})
	msgs := withAnswer(rtMsgs("You are helpful.", testPrompt), testResponse)
	var r struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", h.key, map[string]any{"input": map[string]any{"messages": msgs}}, &r); code != 200 {
		t.Fatalf("status %d", code)
	}
	res := r.Results[0]
	p := res.Qwen3Guard.Prompt
	if !res.Flagged || !p.Flagged || res.Qwen3Guard.Response.Flagged {
		t.Fatalf("setup: want the prompt alone flagged: %+v", res)
	}
	var lr litellmResponse
	h.do("POST", "/beta/litellm_basic_guardrail_api", h.key, map[string]any{"structured_messages": msgs[:2], "texts": []string{testResponse}, "input_type": "response"}, &lr)
	if res.RiskLevel != p.Level || res.Category != p.Category {
		t.Errorf("flagged by the prompt (%s, %s; categories[%s]=%v; LiteLLM: %q), but risk_level %q, category %q (a response token the loose policy did not flag; decision %+v)",
			p.Level, p.Category, openAICategory(p.Category), res.Categories[openAICategory(p.Category)], lr.BlockedReason, res.RiskLevel, res.Category, res.Qwen3Guard.Response.Decision)
	}
}
