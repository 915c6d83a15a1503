package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := mainWithArgs(args, &out, &errb)
	return code, out.String(), errb.String()
}

// TestGenModelVerify drives both commands end to end: a generated guard
// folder verifies (exit 0), the --noesis replica is refused (exit 1) with
// the head names, and flag mistakes exit 2.
func TestGenModelVerify(t *testing.T) {
	base := t.TempDir()
	good, bad := filepath.Join(base, "good"), filepath.Join(base, "noesis")
	if code, out, errs := run(t, "gen-model", "--preset", "tiny", "--dtype", "awq", "--seed", "3", "--out", good); code != 0 || !strings.Contains(out, "AWQ GEMM w4 group 64") {
		t.Fatalf("gen-model: %d %q %q", code, out, errs)
	}
	code, out, _ := run(t, "verify", good)
	if code != 0 || !strings.Contains(out, "OK: complete Qwen3Guard-Stream model") || !strings.Contains(out, "model.layers.1.mlp.down_proj.qweight") {
		t.Fatalf("verify good: %d\n%s", code, out)
	}
	code, out, _ = run(t, "verify", good, "--json")
	var rep struct {
		OK     bool           `json:"ok"`
		Counts map[string]int `json:"counts"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Counts["USED"] != 60 {
		t.Fatalf("verify --json: %d %+v\n%.300s", code, rep, out)
	}

	if code, out, errs := run(t, "gen-model", "--noesis", "--preset", "tiny", "--out", bad, "--json"); code != 0 || !strings.Contains(out, `"noesis": true`) {
		t.Fatalf("gen-model --noesis: %d %q %q", code, out, errs)
	}
	code, out, errs := run(t, "verify", "--json", bad)
	if code != 1 || errs != "" {
		t.Fatalf("verify noesis: exit %d, stderr %q", code, errs)
	}
	for _, n := range checkpoint.HeadNames {
		if !strings.Contains(out, n) {
			t.Errorf("json output lacks %s", n)
		}
	}
	code, out, _ = run(t, "verify", bad)
	if code != 1 || !strings.Contains(out, "cannot do stream safety classification") || !strings.Contains(out, "REFUSED") {
		t.Errorf("verify noesis text: %d\n%s", code, out)
	}

	for _, args := range [][]string{
		{"verify"}, {"verify", good, bad}, {"verify", "--bogus", good},
		{"gen-model"}, {"gen-model", "--out", filepath.Join(base, "x"), "extra"},
	} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
	}
	if code, _, errs := run(t, "verify", filepath.Join(base, "absent")); code != 1 || !strings.Contains(errs, "absent") {
		t.Errorf("missing folder: %d %q", code, errs)
	}
	if code, _, errs := run(t, "gen-model", "--preset", "nope", "--out", filepath.Join(base, "y")); code != 1 || !strings.Contains(errs, "unknown preset") {
		t.Errorf("bad preset: %d %q", code, errs)
	}
	if code, _, _ := run(t, "verify", "-h"); code != 0 {
		t.Errorf("verify -h: %d", code)
	}
	if _, err := os.Stat(filepath.Join(good, "tokenizer.json")); err != nil {
		t.Error(err)
	}
}
