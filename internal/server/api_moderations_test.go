package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

// TestModerations checks OpenAI's shape and that each result carries the
// verdicts Model.Moderate computes alone, bit for bit.
func TestModerations(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{})
	conv := []tokenizer.Message{{Role: "user", Content: testPrompt}, {Role: "assistant", Content: testResponse}}
	var resp struct {
		ID      string `json:"id"`
		Model   string `json:"model"`
		Results []moderationResult
	}
	body := map[string]any{"model": "ignored", "input": []any{"first text", map[string]any{"messages": conv}, "third"}}
	if code, _ := h.do("POST", "/v1/moderations", "", body, &resp); code != 200 {
		t.Fatalf("status %d", code)
	}
	if !strings.HasPrefix(resp.ID, "modr-") || resp.Model != "qwen3guard-stream" || len(resp.Results) != 3 {
		t.Fatalf("response %+v", resp)
	}
	l := m.Info().Labels
	for i, want := range [][]tokenizer.Message{{{Role: "user", Content: "first text"}}, conv, {{Role: "user", Content: "third"}}} {
		ref, err := m.Moderate(context.Background(), guardhook.Messages[guard.Message](want), nil)
		if err != nil {
			t.Fatal(err)
		}
		r := resp.Results[i]
		samePrompt(t, "prompt", r.Qwen3Guard.Prompt, ref.Prompt)
		// Every category of the model is a key, from its config.
		q := r.Qwen3Guard
		for _, c := range append(append([]string{}, l.ResponseCategory...), l.QueryCategory...) {
			if _, ok := q.Categories[c]; !ok {
				t.Errorf("result %d: category %q missing", i, c)
			}
			if s, ok := q.CategoryScores[c]; !ok || s < 0 || s > 1 {
				t.Errorf("result %d: score of %q is %v", i, c, s)
			}
			// OpenAI's keys carry the same flag and score.
			if k := openAICategory(c); r.Categories[k] != q.Categories[c] || r.CategoryScores[k] != q.CategoryScores[c] {
				t.Errorf("result %d: %q→%q: %v %v, want %v %v", i, c, k, r.Categories[k], r.CategoryScores[k], q.Categories[c], q.CategoryScores[c])
			}
		}
		if len(q.Categories) != len(l.QueryCategory) { // the query categories include the response ones
			t.Errorf("result %d: %d categories", i, len(q.Categories))
		}
		if len(r.RiskProbabilities) != len(l.QueryRisk) {
			t.Errorf("result %d: risk probabilities %v", i, r.RiskProbabilities)
		}
		// The largest score is P(not safe) × P(category) of some verdict.
		wantScore := (1 - ref.Prompt.RiskProbs[0]) * ref.Prompt.CategoryProbs[0]
		for _, tv := range ref.Tokens {
			wantScore = max(wantScore, (1-tv.RiskProbs[0])*tv.CategoryProbs[0])
		}
		if got := r.Qwen3Guard.CategoryScores[l.QueryCategory[0]]; got != wantScore {
			t.Errorf("result %d: score of %q is %v, want %v", i, l.QueryCategory[0], got, wantScore)
		}
		flagged := ref.Prompt.Flagged || ref.FlaggedIndex >= 0
		if r.Flagged != flagged {
			t.Errorf("result %d: flagged %v, want %v", i, r.Flagged, flagged)
		}
		if i == 1 {
			d := r.Qwen3Guard.Response
			if d == nil || d.Tokens != len(ref.Tokens) || d.FlaggedIndex != ref.FlaggedIndex || d.Decision != *ref.Decision {
				t.Fatalf("response detail %+v, want %d tokens, flagged at %d, %+v", d, len(ref.Tokens), ref.FlaggedIndex, ref.Decision)
			}
			if ref.FlaggedIndex >= 0 && (r.RiskLevel != ref.Tokens[ref.FlaggedIndex].Risk || !r.Qwen3Guard.Categories[ref.Tokens[ref.FlaggedIndex].Category]) {
				t.Errorf("deciding verdict %q %q, want token %d's", r.RiskLevel, r.Category, ref.FlaggedIndex)
			}
		} else if r.RiskLevel != ref.Prompt.Risk {
			t.Errorf("result %d: risk level %q, want the prompt's %q", i, r.RiskLevel, ref.Prompt.Risk)
		}
	}
	if n := h.srv.metrics.openStreams.Load(); n != 0 {
		t.Fatalf("%d streams left open", n)
	}
}

// TestModerationsPolicy uses per-tenant policies to force both outcomes:
// a threshold of 0 flags every verdict of its category, a block list of
// one category flags nothing else.
func TestModerationsPolicy(t *testing.T) {
	m := testModel(t)
	cats := m.Info().Labels.ResponseCategory
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0
	}
	cfg := twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Mode: "strict", Debounce: 1, Thresholds: thr}
		b.Policy = PolicyConfig{Mode: "loose", Block: []string{cats[0]}, Thresholds: map[string]float32{cats[0]: 1}} // loose: P(Unsafe) >= 1 never holds here
	})
	h := newHarness(t, Options{Config: cfg})
	conv := map[string]any{"messages": []tokenizer.Message{{Role: "user", Content: testPrompt}, {Role: "assistant", Content: testResponse}}}
	var ra, rb struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": conv}, &ra); code != 200 {
		t.Fatalf("tenant a: status %d", code)
	}
	if code, _ := h.do("POST", "/v1/moderations", "key-b", map[string]any{"input": conv}, &rb); code != 200 {
		t.Fatalf("tenant b: status %d", code)
	}
	a, b := ra.Results[0], rb.Results[0]
	if !a.Flagged || !a.Qwen3Guard.Prompt.Flagged || a.Qwen3Guard.Response.FlaggedIndex != 0 {
		t.Errorf("tenant a (threshold 0, debounce 1) not flagged at once: %+v", a.Qwen3Guard)
	}
	if b.Flagged || b.Qwen3Guard.Response.FlaggedIndex != -1 {
		t.Errorf("tenant b (nothing can flag) flagged: %+v", b.Qwen3Guard)
	}
}

func TestModerationsBadInput(t *testing.T) {
	h := newHarness(t, Options{MaxBodyBytes: 4096})
	for _, tc := range []struct {
		body string
		code int
		msg  string
	}{
		{`{}`, 400, `"input" is required`},
		{`{"input": 3}`, 400, "must be a string"},
		{`{"input": []}`, 400, "empty array"},
		{`{"input": ["a", {"type": "image_url", "image_url": {"url": "x"}}]}`, 400, "cannot be mixed"},
		{`{"input": {"messages": [{"role": "robot", "content": "a"}]}}`, 400, `role "robot"`},
		{`{"input": {"messages": [{"role": "tool", "content": "a"}]}}`, 400, "no system, user or assistant message"},
		{`{"input": {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}, {"role": "assistant", "content": "d"}]}}`, 400, "must end with a user turn"},
		// After the last user turn only the response and tool results:
		// anything else is refused, not judged in part.
		{`{"input": {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}]}}`, 400, "messages[1]: a system message with no user message after it"},
		{`{"input": {"messages": [{"role": "system", "content": "s"}]}}`, 400, "messages[0]: a system message with no user message after it"},
		{`{"input": "` + strings.Repeat("x", 5000) + `"}`, 413, "larger than 4096"},
		// One JSON value and nothing after it but white space.
		{`{"input": "hi"}}`, 400, "data after it"},
		{`{"input": "hi"}]`, 400, "data after it"},
		{`{"input": "hi"} x`, 400, "data after it"},
		{`{"input": "hi"} {"input": "again"}`, 400, "data after it"},
		{`{"input": "hi"`, 400, "invalid JSON body"},
	} {
		var e errBody
		if code, _ := h.do("POST", "/v1/moderations", "", tc.body, &e); code != tc.code || !strings.Contains(e.Error.Message, tc.msg) {
			t.Errorf("%.60s: status %d %q, want %d %q", tc.body, code, e.Error.Message, tc.code, tc.msg)
		}
		// An input the guard cannot read names the field at fault.
		if strings.HasPrefix(tc.body, `{"input": `) && tc.code == 400 && !strings.Contains(tc.msg, "data after") && !strings.Contains(tc.msg, "invalid JSON") && !strings.Contains(tc.msg, "must end with") && (e.Error.Param == nil || *e.Error.Param != "input") {
			t.Errorf("%.60s: param %v, want \"input\"", tc.body, e.Error.Param)
		}
	}
}

func TestParseModerationInput(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want [][]tokenizer.Message
	}{
		{`"hi"`, [][]tokenizer.Message{{{Role: "user", Content: "hi"}}}},
		{`["a", "b"]`, [][]tokenizer.Message{{{Role: "user", Content: "a"}}, {{Role: "user", Content: "b"}}}},
		{`[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]`, [][]tokenizer.Message{{{Role: "user", Content: "a\nb"}}}},
		// Every part with text is judged, whatever its type (chatmsg.Part).
		{`[{"type": "input_text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "output_text", "text": "b"}]`,
			[][]tokenizer.Message{{{Role: "user", Content: "a\nb"}}}},
		{`{"messages": [{"role": "user", "content": [{"type": "input_text", "text": "u"}, "v"]}, {"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]}]}`,
			[][]tokenizer.Message{{{Role: "user", Content: "u\nv"}, {Role: "assistant", Content: "no"}}}},
		{`{"messages": [{"role": "developer", "content": [{"type": "text", "text": "s"}]}, {"role": "user", "content": "u"}]}`,
			[][]tokenizer.Message{{{Role: "system", Content: "s"}, {Role: "user", Content: "u"}}}},
	} {
		in, err := parseModerationInput(json.RawMessage(tc.in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var got [][]tokenizer.Message
		for _, c := range in {
			got = append(got, c.msgs)
		}
		if js, wjs := mustJSON(got), mustJSON(tc.want); js != wjs {
			t.Errorf("%s: got %s, want %s", tc.in, js, wjs)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func FuzzParseModerationInput(f *testing.F) {
	for _, s := range []string{`"hi"`, `["a", {"messages": [{"role": "user", "content": "x"}]}]`, `[{"type": "text", "text": "a"}]`, `{"messages": []}`, `[1]`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		convs, err := parseModerationInput(b)
		if err != nil {
			return
		}
		if len(convs) == 0 || len(convs) > maxModerationInputs {
			t.Fatalf("%d conversations from %q", len(convs), b)
		}
		for _, c := range convs {
			// Nothing to judge comes only from blank text (a result, not
			// an error, as OpenAI answers it) or parts the guard skips.
			if len(c.msgs) == 0 && len(c.skipped) == 0 && !hasBlankString(b) {
				t.Fatalf("empty conversation from %q", b)
			}
		}
	})
}

// hasBlankString reports whether the JSON value b holds a string that is
// empty or white space.
func hasBlankString(b []byte) bool {
	var v any
	if json.Unmarshal(bytes.TrimSpace(b), &v) != nil { // as parseModerationInput reads it
		return false
	}
	var walk func(any) bool
	walk = func(v any) bool {
		switch x := v.(type) {
		case string:
			return strings.TrimSpace(x) == ""
		case []any:
			for _, e := range x {
				if walk(e) {
					return true
				}
			}
		case map[string]any:
			for _, e := range x {
				if walk(e) {
					return true
				}
			}
		}
		return false
	}
	return walk(v)
}

func TestModerationsMethod(t *testing.T) {
	h := newHarness(t, Options{})
	if code, _ := h.do("GET", "/v1/moderations", "", nil, nil); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: status %d", code)
	}
}

// failingReader gives err once its bytes are read.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestDecodeJSONReadError: a body whose value arrived but whose reading
// then failed (a body deadline) keeps that error, so the answer says the
// body did not arrive in time (408) and not that it was malformed.
func TestDecodeJSONReadError(t *testing.T) {
	req := httptest.NewRequest("POST", "/v1/moderations", &failingReader{strings.NewReader(`{"input": "hi"}` + "\n"), bodyTimeout{"test"}})
	var v moderationRequest
	if err := decodeJSON(req, &v); !errors.Is(err, errBodyTimeout) {
		t.Fatalf("error %v, want the body timeout", err)
	}
	req = httptest.NewRequest("POST", "/v1/moderations", strings.NewReader(`{"input": "hi"}`+"\n\t "))
	if err := decodeJSON(req, &v); err != nil || string(v.Input) != `"hi"` {
		t.Fatalf("a value and white space: %v, %s", err, v.Input)
	}
}

// flagPromptsHarness: key-a's policy flags every prompt (threshold 0 on every
// category) and no response (a debounce run no response reaches).
func flagPromptsHarness(t *testing.T) *harness {
	m := testModel(t)
	return newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Debounce: 100000, Thresholds: zeroThresholds(m.Info().Labels.QueryCategory)}
	})})
}

// TestImageOnlyConversationNotJudged: an input with nothing but parts the
// guard cannot read (an image alone) is not judged — flagged false, the
// parts listed as skipped — whether it comes as parts, as a conversation
// or to the LiteLLM API (NONE). The conversation form was refused (400:
// an empty prompt).
func TestImageOnlyConversationNotJudged(t *testing.T) {
	h := flagPromptsHarness(t)
	img := `{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}`
	var parts struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", "key-a", `{"input": [`+img+`]}`, &parts); code != 200 {
		t.Fatalf("image as a part: status %d", code)
	}
	var lr litellmResponse
	if code, _ := h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a",
		`{"texts": [], "structured_messages": [{"role":"user","content":[`+img+`]}], "input_type": "request"}`, &lr); code != 200 || lr.Action != "NONE" {
		t.Fatalf("litellm: status %d %+v", code, lr)
	}
	var out map[string]any
	code, _ := h.do("POST", "/v1/moderations", "key-a", `{"input": {"messages": [{"role":"user","content":[`+img+`]}]}}`, &out)
	if code != 200 {
		t.Errorf("image-only conversation: status %d %v; docs: 200, not judged (flagged false, prompt null, skipped [image_url])", code, out)
	}
}

// TestThresholdFlagNamesItsLevel: a verdict a tenant threshold flags while
// its likeliest level is Safe is reported with the level the policy
// applied and the category whose threshold it crossed (it was reported as
// risk "Safe" with no category), and the LiteLLM reason names the
// threshold.
func TestThresholdFlagNamesItsLevel(t *testing.T) {
	h := flagPromptsHarness(t)
	for _, p := range []string{"hello", "a", "b", "what", testPrompt} {
		res := moderateOne(t, h, p)
		if !res.Flagged || res.Qwen3Guard.Prompt.Risk != "Safe" {
			continue // want a threshold flag over an argmax-Safe verdict
		}
		var lr litellmResponse
		h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a", map[string]any{"texts": []string{p}, "input_type": "request"}, &lr)
		if res.Category == "" || res.RiskLevel == "Safe" || strings.Contains(lr.BlockedReason, "flagged Safe") {
			t.Fatalf("%q: flagged=%v but risk_level=%q category=%q; litellm %q", p, res.Flagged, res.RiskLevel, res.Category, lr.BlockedReason)
		}
		return
	}
	t.Skip("no prompt flagged over an argmax-Safe verdict")
}

// TestModerationsBlankInput: a blank string is no text to judge: an
// unflagged result, as OpenAI answers it (it was a 400, which the
// official SDKs raise as an error), beside the other inputs' results.
func TestModerationsBlankInput(t *testing.T) {
	h := newHarness(t, Options{})
	var r struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": []string{"Hello there", " \n"}}, &r); code != 200 || len(r.Results) != 2 {
		t.Fatalf("status %d, %d results", code, len(r.Results))
	}
	if blank := r.Results[1]; blank.Flagged || blank.Qwen3Guard.Prompt != nil || r.Results[0].Qwen3Guard.Prompt == nil {
		t.Fatalf("results %+v", r.Results)
	}
	if code, _ := h.do("POST", "/v1/moderations", "", map[string]any{"input": ""}, &r); code != 200 || len(r.Results) != 1 || r.Results[0].Flagged {
		t.Fatalf(`"": status %d %+v`, code, r.Results)
	}
}
