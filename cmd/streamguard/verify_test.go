package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/guard"
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
	// An unknown preset or dtype is a usage error that lists the names.
	if code, _, errs := run(t, "gen-model", "--preset", "nope", "--out", filepath.Join(base, "y")); code != 2 ||
		errs != `streamguard gen-model: usage error: --preset "nope": want one of qwen3guard-stream-0.6b, qwen3guard-stream-4b, qwen3guard-stream-8b, tiny`+"\n" {
		t.Errorf("bad preset: %d %q", code, errs)
	}
	if code, _, errs := run(t, "gen-model", "--dtype", "f8", "--out", filepath.Join(base, "y")); code != 2 ||
		errs != `streamguard gen-model: usage error: --dtype "f8": want one of f32, bf16, f16, awq`+"\n" {
		t.Errorf("bad dtype: %d %q", code, errs)
	}
	if _, err := os.Stat(filepath.Join(base, "y")); !os.IsNotExist(err) {
		t.Errorf("a usage error left %s behind: %v", filepath.Join(base, "y"), err)
	}
	if code, _, _ := run(t, "verify", "-h"); code != 0 {
		t.Errorf("verify -h: %d", code)
	}
	if _, err := os.Stat(filepath.Join(good, "tokenizer.json")); err != nil {
		t.Error(err)
	}
}

// setConfigField writes dir/config.json with one field set to raw JSON.
func setConfigField(t *testing.T, dir, field, raw string) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	m[field] = json.RawMessage(raw)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyRefusesOversizedConfig: a config field that sizes memory and is
// zero, negative or beyond its limit makes verify exit 1 naming the field,
// and guard.Load refuse the folder before allocating anything from it.
func TestVerifyRefusesOversizedConfig(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "good")
	if code, out, errs := run(t, "gen-model", "--preset", "tiny", "--seed", "5", "--out", good); code != 0 {
		t.Fatalf("gen-model: %d %q %q", code, out, errs)
	}
	goodCfg, err := os.ReadFile(filepath.Join(good, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, "verify", good, "--json")
	var rep struct {
		OK        bool                        `json:"ok"`
		Problems  []string                    `json:"problems"`
		Tokenizer *checkpoint.TokenizerReport `json:"tokenizer"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.OK || rep.Tokenizer == nil || !rep.Tokenizer.OK || rep.Tokenizer.VocabSize != 151669 {
		t.Fatalf("verify good --json: %d %+v\n%.300s", code, rep, out)
	}

	for _, tc := range []struct{ field, value, want string }{
		{"max_position_embeddings", "2000000000", "max_position_embeddings 2000000000 exceeds the limit 1048576"},
		{"max_position_embeddings", "2e9", "max_position_embeddings"},
		{"max_position_embeddings", "0", "max_position_embeddings must be positive, got 0"},
		{"vocab_size", "4294967296", "vocab_size 4294967296 exceeds the limit"},
		{"vocab_size", "0", "vocab_size must be positive"},
		{"hidden_size", "-64", "hidden_size must be positive, got -64"},
		{"intermediate_size", "1073741824", "intermediate_size 1073741824 exceeds the limit"},
		{"num_hidden_layers", "100000", "num_hidden_layers 100000 exceeds the limit 1024"},
		{"num_attention_heads", "-4", "num_attention_heads must be positive"},
		{"num_key_value_heads", "0", "num_key_value_heads must be positive"},
		{"head_dim", "65536", "head_dim 65536 exceeds the limit 1024"},
		{"guard_inner_size", "1048576", "guard_inner_size 1048576 exceeds the limit"},
		{"num_category", "0", "num_category must be at least 1, got 0"},
		{"num_query_risk_level", "-3", "num_query_risk_level must be at least 1, got -3"},
	} {
		t.Run(tc.field+"="+tc.value, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(good, "config.json"), goodCfg, 0o644); err != nil {
				t.Fatal(err)
			}
			setConfigField(t, good, tc.field, tc.value)
			code, out, errs := run(t, "verify", good)
			if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "REFUSED") {
				t.Errorf("verify: exit %d, stderr %q\n%s", code, errs, out)
			}
			code, out, _ = run(t, "verify", "--json", good)
			rep.OK, rep.Problems = true, nil
			if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || rep.OK || !strings.Contains(strings.Join(rep.Problems, "\n"), tc.want) {
				t.Errorf("verify --json: exit %d %+v", code, rep)
			}

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			m, err := guard.Load(context.Background(), good, guard.Options{})
			runtime.ReadMemStats(&after)
			if err == nil {
				m.Close()
				t.Fatal("guard.Load accepted the folder")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("guard.Load: %v", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 16<<20 {
				t.Errorf("guard.Load allocated %d bytes before refusing", n)
			}
		})
	}
	if err := os.WriteFile(filepath.Join(good, "config.json"), goodCfg, 0o644); err != nil {
		t.Fatal(err)
	}

	// A tokenizer whose scaffold maps elsewhere is refused by verify too.
	tp := filepath.Join(good, "tokenizer.json")
	tb, err := os.ReadFile(tp)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tp, bytes.Replace(tb, []byte(`"content": "</think>"`), []byte(`"content": "</thunk>"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "verify", good)
	if code != 1 || !strings.Contains(out, `tokenizer.json: tokenizer has no token "</think>"`) || !strings.Contains(out, "Tokenizer:     tokenizer.json, 151669 tokens") {
		t.Errorf("verify bad tokenizer: %d\n%s", code, out)
	}
}
