package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/tokenizer"
)

// auditRecords returns the audit log's records with message msg.
func auditRecords(t *testing.T, h *harness, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(h.audit.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

// zeroThresholds is a threshold of 0 on each category: every verdict on
// them is flagged, whatever its likeliest level.
func zeroThresholds(cats []string) map[string]float32 {
	thr := map[string]float32{}
	for _, c := range cats {
		thr[c] = 0
	}
	return thr
}

// moderateOne is tenant key-a's /v1/moderations result for one input.
func moderateOne(t *testing.T, h *harness, input any) moderationResult {
	t.Helper()
	var r struct{ Results []moderationResult }
	if code, _ := h.do("POST", "/v1/moderations", "key-a", map[string]any{"input": input}, &r); code != 200 || len(r.Results) != 1 {
		t.Fatalf("status %d, %d results", code, len(r.Results))
	}
	return r.Results[0]
}

// TestThresholdFlagAuditPrompt: a prompt a tenant threshold flags while its
// likeliest level is Safe has the same level and category in its audit
// record as in /v1/moderations' answer (the record said "Safe").
func TestThresholdFlagAuditPrompt(t *testing.T) {
	h := flagPromptsHarness(t)
	for _, p := range []string{"hello", "a", "b", "what", testPrompt} {
		h.audit.Reset()
		res := moderateOne(t, h, p)
		if !res.Flagged || res.Qwen3Guard.Prompt.Risk != "Safe" {
			continue
		}
		recs := auditRecords(t, h, "prompt")
		if len(recs) != 1 {
			t.Fatalf("%d prompt records:\n%s", len(recs), h.audit.String())
		}
		if rec := recs[0]; rec["level"] != res.RiskLevel || rec["category"] != res.Category {
			t.Fatalf("%q: /v1/moderations says risk_level=%q category=%q; the audit record says level=%v category=%v flagged=%v",
				p, res.RiskLevel, res.Category, rec["level"], rec["category"], rec["flagged"])
		}
		return
	}
	t.Skip("no prompt flagged over an argmax-Safe verdict")
}

// TestThresholdFlagAuditResponse: a response token a threshold flags while
// its likeliest level is Safe is recorded at the level the same stream's
// "stream closed" record (the policy's decision) and /v1/moderations give
// it (the "response flagged" record said "Safe").
func TestThresholdFlagAuditResponse(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Debounce: 1, Thresholds: zeroThresholds(m.Info().Labels.ResponseCategory)}
	})})
	for _, resp := range []string{testResponse, "Sure.", "hello there", "ok", "a", "b", "c", "the", "No", "yes", "what", "1", "x y z", "Hello"} {
		h.audit.Reset()
		conv := []tokenizer.Message{{Role: "user", Content: testPrompt}, {Role: "assistant", Content: resp}}
		res := moderateOne(t, h, map[string]any{"messages": conv})
		if res.Qwen3Guard.Response == nil || !res.Qwen3Guard.Response.Flagged || res.Qwen3Guard.Response.FlaggedIndex != 0 {
			continue
		}
		// The flagged token's probabilities (the deciding verdict): want
		// a token whose likeliest level is Safe.
		best := ""
		for l, p := range res.RiskProbabilities {
			if best == "" || p > res.RiskProbabilities[best] {
				best = l
			}
		}
		if best != "Safe" {
			continue
		}
		flags := auditRecords(t, h, "response flagged")
		closed := auditRecords(t, h, "stream closed")
		if len(flags) != 1 || len(closed) != 1 {
			t.Fatalf("records:\n%s", h.audit.String())
		}
		if flags[0]["level"] == "Safe" || flags[0]["level"] != closed[0]["level"] {
			t.Fatalf("one flag, levels disagree: /v1/moderations risk_level=%q; audit \"response flagged\" level=%v; \"stream closed\" level=%v",
				res.RiskLevel, flags[0]["level"], closed[0]["level"])
		}
		return
	}
	t.Skip("no response flagged")
}

// TestThresholdFlagLooseControversial: in loose mode Controversial counts
// as safe, so a verdict a threshold flags while its likeliest level is
// Controversial is reported at the level the policy applied, not as
// "Controversial" (in /v1/moderations and LiteLLM's reason).
func TestThresholdFlagLooseControversial(t *testing.T) {
	m := testModel(t)
	h := newHarness(t, Options{Config: twoTenants(func(a, b *TenantConfig) {
		a.Policy = PolicyConfig{Mode: "loose", Debounce: 100000, Thresholds: zeroThresholds(m.Info().Labels.QueryCategory)}
	})})
	var prompts []string
	for i := 0; i < 300; i++ {
		prompts = append(prompts, fmt.Sprintf("%s %d", strings.Repeat("x", i%7), i))
	}
	for _, p := range prompts {
		res := moderateOne(t, h, p)
		if !res.Flagged || res.Qwen3Guard.Prompt.Risk != "Controversial" {
			continue
		}
		var lr litellmResponse
		h.do("POST", "/beta/litellm_basic_guardrail_api", "key-a", map[string]any{"texts": []string{p}, "input_type": "request"}, &lr)
		if res.RiskLevel == "Controversial" || strings.Contains(lr.BlockedReason, "flagged Controversial") {
			t.Fatalf("%q, loose mode: flagged=%v with risk_level=%q; litellm %q", p, res.Flagged, res.RiskLevel, lr.BlockedReason)
		}
		return
	}
	t.Skip("no prompt flagged over an argmax-Controversial verdict")
}
