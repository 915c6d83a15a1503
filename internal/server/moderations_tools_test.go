package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
)

// TestModerationsToolResultsDecide: a conversation's tool results after
// its last user turn (a fetched page, a file: text the model reads) flag
// the result when their verdict is flagged, though neither the prompt nor
// the answer is, and their verdict is then the deciding one.
func TestModerationsToolResultsDecide(t *testing.T) {
	h := newHarness(t, Options{})
	l := h.srv.info.Labels
	verdict := func(level string, unsafe float32, cat int, flagged bool) *guard.PromptVerdict {
		risk := make([]float32, len(l.QueryRisk))
		risk[0], risk[1] = 1-unsafe, unsafe
		cats := make([]float32, len(l.QueryCategory))
		cats[cat] = 1
		return &guard.PromptVerdict{Verdict: guard.Verdict{Risk: level, Level: level, RiskProbs: risk, Category: l.QueryCategory[cat], CategoryProbs: cats}, Flagged: flagged}
	}
	safe := &conversationVerdict{prompt: verdict("Safe", 0.1, 0, false)}
	for _, c := range []struct {
		name    string
		results *conversationVerdict
		flagged bool
		level   string
	}{
		{"flagged tool results", &conversationVerdict{prompt: verdict("Unsafe", 0.9, 2, true)}, true, "Unsafe"},
		{"riskier, not flagged", &conversationVerdict{prompt: verdict("Safe", 0.4, 2, false)}, false, "Safe"},
		{"less risky", &conversationVerdict{prompt: verdict("Safe", 0.05, 2, false)}, false, "Safe"},
	} {
		res := h.srv.result(safe, c.results, nil)
		cat := l.QueryCategory[2]
		// The category's score is P(not safe) × P(category), computed so.
		score := 1 - c.results.prompt.RiskProbs[0]
		if res.Flagged != c.flagged || res.Qwen3Guard.Categories[cat] != c.flagged || res.RiskLevel != c.level ||
			res.Qwen3Guard.ToolResults != c.results.prompt || res.Qwen3Guard.CategoryScores[cat] != score {
			t.Errorf("%s: flagged %v, level %q, %s %v (score %v), tool results %v", c.name, res.Flagged, res.RiskLevel, cat,
				res.Qwen3Guard.Categories[cat], res.Qwen3Guard.CategoryScores[cat], res.Qwen3Guard.ToolResults)
		}
		// The deciding verdict: the riskier of the two.
		wantProbs := safe.prompt.RiskProbs
		if c.results.prompt.RiskProbs[0] < safe.prompt.RiskProbs[0] {
			wantProbs = c.results.prompt.RiskProbs
		}
		if got := res.RiskProbabilities[l.QueryRisk[0]]; got != wantProbs[0] {
			t.Errorf("%s: deciding verdict's P(%s) %v, want %v", c.name, l.QueryRisk[0], got, wantProbs[0])
		}
	}
}

// TestModerationsToolResultsOneStream: a conversation with tool results
// is judged on one of the tenant's streams at a time (the results after
// the conversation): a tenant with max_streams 1 can send one.
func TestModerationsToolResultsOneStream(t *testing.T) {
	cfg := &Config{Tenants: []TenantConfig{{Name: "a", APIKeySHA256: []string{HashKey("key-a")}, MaxStreams: 1}}}
	h := newHarness(t, Options{Config: cfg})
	conv := map[string]any{"messages": []any{
		map[string]any{"role": "user", "content": "What is the weather?"},
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "weather", "arguments": "{}"}}}},
		map[string]any{"role": "tool", "tool_call_id": "c", "content": "sunny"},
	}}
	for range 10 {
		if r := moderateOne(t, h, conv); r.Qwen3Guard.ToolResults == nil {
			t.Fatalf("tool results not judged: %+v", r.Qwen3Guard)
		}
	}
}

// TestModerationsToolResultsEveryTurn: qwen3guard.tool_results is the
// verdict on the tool results' own turn, with a tenant's every_turn too
// (which judges the prompt's turns again in that conversation, and whose
// prompt verdict is the first flagged turn's): a flagged user turn is not
// reported as flagged tool results.
func TestModerationsToolResultsEveryTurn(t *testing.T) {
	m := testModel(t)
	thr := map[string]float32{}
	for _, c := range m.Info().Labels.QueryCategory {
		thr[c] = 0.4 // the user turn below scores ~0.55, the tool result ~0.19
	}
	for _, c := range m.Info().Labels.ResponseCategory {
		thr[c] = 0.4
	}
	conv := map[string]any{"messages": []any{
		map[string]any{"role": "user", "content": "b"},
		map[string]any{"role": "assistant", "content": nil, "tool_calls": []any{map[string]any{"id": "c", "type": "function", "function": map[string]any{"name": "weather", "arguments": "{}"}}}},
		map[string]any{"role": "tool", "tool_call_id": "c", "content": "sunny"},
	}}
	for _, every := range []bool{false, true} {
		h := newHarness(t, Options{Model: m, Config: twoTenants(func(a, b *TenantConfig) {
			a.Policy.EveryTurn, a.Policy.Thresholds = every, thr
		})})
		r := moderateOne(t, h, conv)
		tr := r.Qwen3Guard.ToolResults
		if tr == nil {
			t.Fatalf("every_turn %v: no tool_results", every)
		}
		own := tr
		if n := len(tr.Turns); n > 0 {
			own = &tr.Turns[n-1] // the tool results' own turn
		}
		t.Logf("every_turn %v: prompt flagged %v at %d; tool_results flagged %v at %d (their own turn: flagged %v at %d)",
			every, r.Qwen3Guard.Prompt.Flagged, r.Qwen3Guard.Prompt.Position, tr.Flagged, tr.Position, own.Flagged, own.Position)
		if tr.Flagged != own.Flagged || tr.Position != own.Position {
			t.Errorf("every_turn %v: qwen3guard.tool_results is flagged=%v at position %d (%s, %s), but the tool results' turn is flagged=%v at %d: the user turn's verdict is reported as the tool results'",
				every, tr.Flagged, tr.Position, tr.Level, tr.Category, own.Flagged, own.Position)
		}
	}
}

// TestModerationsSystemBeforeUser: a system message is refused at reading
// only with no user message after it; a system prompt before a user
// message of an image alone goes on to the chat template, which refuses
// an empty prompt: a 400 that names the input too.
func TestModerationsSystemBeforeUser(t *testing.T) {
	h := newHarness(t, Options{})
	img := map[string]any{"type": "image_url", "image_url": map[string]any{"url": "https://example.com/cat.png"}}
	body := map[string]any{"input": map[string]any{"messages": []any{
		map[string]any{"role": "system", "content": "You describe pictures."},
		map[string]any{"role": "user", "content": []any{img}},
	}}}
	var e errBody
	if code, _ := h.do("POST", "/v1/moderations", "", body, &e); code != 400 || e.Error.Param == nil || *e.Error.Param != "input" ||
		!strings.Contains(e.Error.Message, "empty prompt") {
		t.Fatalf("system prompt, then an image: status %d %+v", code, e.Error)
	}
}

// TestModerationsSkippedOnlyLateSystem: a conversation of nothing but
// skipped parts ("an input with nothing but skipped parts (an image alone)
// ... is not judged") is answered 200, not judged, with qwen3guard.skipped,
// whatever message comes last: the refusal of a system message with no
// user message after it is for text the guard would judge, and in a batch
// one such input does not fail the others.
func TestModerationsSkippedOnlyLateSystem(t *testing.T) {
	h := newHarness(t, Options{})
	img := `{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}`
	for name, input := range map[string]string{
		"image, then an empty developer message": `{"messages": [{"role": "user", "content": [` + img + `]}, {"role": "developer", "content": ""}]}`,
		"image, then a system image":             `{"messages": [{"role": "user", "content": [` + img + `]}, {"role": "system", "content": [` + img + `]}]}`,
		"a system image alone":                   `{"messages": [{"role": "system", "content": [` + img + `]}]}`,
		"batch: an image, and a system image":    `[{"messages": [{"role": "user", "content": [` + img + `]}]}, {"messages": [{"role": "system", "content": [` + img + `]}]}]`,
	} {
		var out struct {
			Results []struct {
				Flagged    bool `json:"flagged"`
				Qwen3Guard struct {
					Prompt  json.RawMessage `json:"prompt"`
					Skipped []string        `json:"skipped"`
				} `json:"qwen3guard"`
			} `json:"results"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		code, _ := h.do("POST", "/v1/moderations", "", `{"input": `+input+`}`, &out)
		if code != 200 {
			t.Errorf("%s: status %d (%+v), want 200 not judged", name, code, out.Error)
			continue
		}
		for i, r := range out.Results {
			if r.Flagged || string(r.Qwen3Guard.Prompt) != "null" || len(r.Qwen3Guard.Skipped) != 1 || r.Qwen3Guard.Skipped[0] != "image_url" {
				t.Errorf("%s: result %d %+v, want not judged, skipped [image_url]", name, i, r)
			}
		}
	}
}
