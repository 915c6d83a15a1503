package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestModerateForwardBench drives the engine commands end to end on a
// generated tiny model.
func TestModerateForwardBench(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}

	code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "How do I bake bread?", "--response", "Mix flour and water.")
	// This random model flags the response (exit 3, see TestModerateRules).
	if code != 3 || !strings.Contains(out, "prompt: ") || !strings.Contains(out, `" flour"`) || !strings.Contains(out, "decision: ") {
		t.Fatalf("moderate: exit %d\n%s\n%s", code, out, errs)
	}

	code, out, errs = run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", "Hello there.", "--json", "--mode", "loose")
	var res struct {
		Prompt struct {
			Risk      string    `json:"risk"`
			RiskProbs []float32 `json:"risk_probs"`
		} `json:"prompt"`
		Tokens       []struct{ Text string } `json:"tokens"`
		FlaggedIndex *int                    `json:"flagged_index"`
		Decision     *struct{ Tokens int }   `json:"decision"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || len(res.Prompt.RiskProbs) != 3 || len(res.Tokens) != 3 ||
		res.Tokens[1].Text != " there" || res.FlaggedIndex == nil || res.Decision == nil || res.Decision.Tokens != 3 {
		t.Fatalf("moderate --json: exit %d %+v\n%s\n%s", code, res, out, errs)
	}

	in := `{"id": "a", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
{"messages": [{"role": "user", "content": "Only a prompt"}]}
not json
{"messages": [{"role": "robot", "content": "x"}]}
`
	var stdout, stderr bytes.Buffer
	err := runModerate([]string{"--model", dir, "--jsonl"}, strings.NewReader(in), &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "2 of 4 lines failed") {
		t.Fatalf("moderate --jsonl error %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("moderate --jsonl wrote %d lines:\n%s", len(lines), stdout.String())
	}
	var first, second, third, fourth map[string]any
	for i, p := range []*map[string]any{&first, &second, &third, &fourth} {
		if err := json.Unmarshal([]byte(lines[i]), p); err != nil {
			t.Fatalf("line %d: %v", i+1, err)
		}
	}
	if first["id"] != "a" || first["prompt"] == nil || first["decision"] == nil || len(first["tokens"].([]any)) != 2 {
		t.Errorf("line 1: %v", lines[0])
	}
	if second["prompt"] == nil || second["decision"] != nil || second["error"] != nil {
		t.Errorf("line 2: %v", lines[1])
	}
	if !strings.Contains(third["error"].(string), "invalid JSON") || !strings.Contains(fourth["error"].(string), `role "robot"`) {
		t.Errorf("lines 3, 4: %v / %v", lines[2], lines[3])
	}

	outFile := filepath.Join(t.TempDir(), "fwd.json")
	if code, _, errs := run(t, "forward", "--model", dir, "--ids", "151644,872,198,9707", "--out", outFile); code != 0 {
		t.Fatalf("forward: %d %s", code, errs)
	}
	b, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	var fwd struct {
		Cases []forwardCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &fwd); err != nil || len(fwd.Cases) != 1 {
		t.Fatalf("forward output: %v", err)
	}
	c := fwd.Cases[0]
	if len(c.Hidden) != 4 || len(c.Hidden[0]) != 64 || len(c.Risk[3]) != 3 || len(c.Category[3]) != 8 || len(c.QueryRisk[0]) != 3 || len(c.QueryCategory[0]) != 9 {
		t.Fatalf("forward shapes: %d positions", len(c.Hidden))
	}
	if code, _, errs := run(t, "forward", "--model", dir, "--ids", "1,151936"); code != 1 || !strings.Contains(errs, "outside the vocabulary") {
		t.Errorf("forward with a bad id: %d %s", code, errs)
	}

	code, out, errs = run(t, "bench", "--preset", "tiny", "--dtype", "f32", "--pp", "16", "--positions", "10,100", "--streams", "2,4", "--steps", "2", "--json")
	var rep struct {
		Prefill float64            `json:"prefill_tokens_per_s"`
		Decode  float64            `json:"decode_tokens_per_s"`
		Batched map[string]float64 `json:"batched_tokens_per_s"`
		Load    *float64           `json:"load_seconds"`
		RSS     int64              `json:"rss_bytes"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Prefill <= 0 || rep.Decode <= 0 || rep.Batched["4"] <= 0 || rep.Load == nil {
		t.Fatalf("bench --json: %d %+v\n%s\n%s", code, rep, out, errs)
	}

	for _, args := range [][]string{
		{"moderate", "--prompt", "x"},
		{"moderate", "--model", dir},
		{"moderate", "--model", dir, "--prompt", "x", "--mode", "medium"},
		{"forward", "--model", dir},
		{"bench"},
		{"bench", "--preset", "tiny", "--model", dir},
		{"bench", "--preset", "tiny", "--dtype", "int3"},
	} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
