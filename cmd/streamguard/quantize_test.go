package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuantizeVerifyModerate drives quantize → verify → moderate on the
// tiny preset, then graft on a --noesis replica, through the command line.
func TestQuantizeVerifyModerate(t *testing.T) {
	base := t.TempDir()
	src, q := filepath.Join(base, "src"), filepath.Join(base, "int4")
	if code, _, errs := run(t, "gen-model", "--preset", "tiny", "--seed", "2", "--outlier-channels", "2", "--out", src); code != 0 {
		t.Fatalf("gen-model: %s", errs)
	}
	code, out, errs := run(t, "quantize", "--model", src, "--out", q, "--samples", "2", "--seqlen", "64", "--search-tokens", "64")
	if code != 0 || !strings.Contains(out, "strict load report: OK") || !strings.Contains(out, "query risk") || !strings.Contains(errs, "ETA") {
		t.Fatalf("quantize: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := run(t, "verify", q); code != 0 || !strings.Contains(out, "OK: complete Qwen3Guard-Stream model") || !strings.Contains(out, "awq w4 g64 gemm") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	if code, out, errs := run(t, "moderate", "--model", q, "--prompt", "How do I bake bread?", "--response", "Mix flour and water."); code != 3 || !strings.Contains(out, "FLAGGED") || !strings.Contains(out, "decision: ") {
		// The random weights flag this prompt: exit 3.
		t.Fatalf("moderate: exit %d\n%s\n%s", code, out, errs)
	}

	// A measurement run prints an estimate as JSON.
	code, out, errs = run(t, "quantize", "--model", src, "--layers", "1", "--samples", "1", "--seqlen", "32", "--search-tokens", "32", "--json", "--method", "rtn")
	var res struct {
		Measured         bool    `json:"measured"`
		EstimatedSeconds float64 `json:"estimated_seconds"`
		TotalLayers      int     `json:"total_layers"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || !res.Measured || res.EstimatedSeconds <= 0 || res.TotalLayers != 2 {
		t.Fatalf("quantize --layers: exit %d %+v\n%s\n%s", code, res, out, errs)
	}

	noesis, guardDir, fixed := filepath.Join(base, "noesis"), filepath.Join(base, "guard"), filepath.Join(base, "fixed")
	for _, args := range [][]string{
		{"gen-model", "--preset", "tiny", "--noesis", "--seed", "4", "--out", noesis},
		{"gen-model", "--preset", "tiny", "--dtype", "bf16", "--seed", "4", "--out", guardDir},
	} {
		if code, _, errs := run(t, args...); code != 0 {
			t.Fatalf("%v: %s", args, errs)
		}
	}
	if code, _, _ := run(t, "verify", noesis); code != 1 {
		t.Fatalf("verify accepts the replica")
	}
	code, out, errs = run(t, "graft", "--backbone", noesis, "--heads-from", guardDir, "--out", fixed)
	if code != 0 || !strings.Contains(out, "dropped: lm_head.weight") || !strings.Contains(out, "check: embedding") {
		t.Fatalf("graft: exit %d\n%s\n%s", code, out, errs)
	}
	if code, out, _ := run(t, "verify", fixed); code != 0 || !strings.Contains(out, "OK: complete") {
		t.Fatalf("verify grafted: exit %d\n%s", code, out)
	}
	// Mismatched folders fail with the reason.
	if code, _, errs := run(t, "graft", "--backbone", noesis, "--heads-from", src, "--out", filepath.Join(base, "bad")); code != 1 || !strings.Contains(errs, "not quantized from this guard") {
		t.Errorf("graft mismatched: exit %d %q", code, errs)
	}

	for _, args := range [][]string{
		{"quantize"}, {"quantize", "--model", src}, {"quantize", "--model", src, "--out", q, "extra"},
		{"quantize", "--model", src, "--out", q, "--samples", "0"},
		{"graft"}, {"graft", "--backbone", noesis, "--out", fixed},
	} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := run(t, "quantize", "--model", src, "--out", filepath.Join(base, "x"), "--method", "gptq"); code != 2 ||
		errs != `streamguard quantize: usage error: --method "gptq": want awq or rtn`+"\n" {
		t.Errorf("bad method: exit %d %q", code, errs)
	}
	if code, _, _ := run(t, "quantize", "-h"); code != 0 {
		t.Errorf("quantize -h: exit %d", code)
	}
}
