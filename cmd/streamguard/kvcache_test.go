package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestKVCacheFlag: bench reports the cache type, its bytes per token and
// what a step reads; moderate and forward take the flag; a bad type is a
// usage error (exit 2) on every command that has it.
func TestKVCacheFlag(t *testing.T) {
	// tiny: 2 layers × 2 (k, v) × 2 heads × 16 dims.
	for kv, bpt := range map[string]int64{"f32": 512, "bf16": 256, "int8": 2 * 2 * 2 * (16 + 4), "int4": 2 * 2 * 2 * (8 + 4)} {
		code, out, errs := run(t, "bench", "--preset", "tiny", "--pp", "0", "--positions", "10", "--streams", "", "--steps", "1",
			"--bandwidth-mib", "0", "--kv-cache", kv, "--kv-budget-mib", "1", "--kv-stream-tokens", "100", "--json")
		if code != 0 {
			t.Fatalf("bench --kv-cache %s: %d %s", kv, code, errs)
		}
		var rep struct {
			KVCache   string `json:"kv_cache"`
			PerToken  int64  `json:"kv_bytes_per_token"`
			InBudget  int64  `json:"kv_streams_in_budget"`
			Budget    int64  `json:"kv_budget_bytes"`
			StreamLen int    `json:"kv_stream_tokens"`
			Decode    []struct {
				Position int   `json:"position"`
				Read     int64 `json:"kv_read_bytes"`
			} `json:"decode"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("bench --json: %v\n%s", err, out)
		}
		if rep.KVCache != kv || rep.PerToken != bpt || rep.Budget != 1<<20 || rep.StreamLen != 100 || rep.InBudget != (1<<20)/(100*bpt) ||
			len(rep.Decode) != 1 || rep.Decode[0].Read != 11*bpt {
			t.Errorf("bench --kv-cache %s: %+v", kv, rep)
		}
	}

	dir := filepath.Join(t.TempDir(), "m")
	if code, _, errs := run(t, "gen-model", "--preset", "tiny", "--seed", "1", "--out", dir); code != 0 {
		t.Fatalf("gen-model: %d %s", code, errs)
	}
	for _, kv := range []string{"int8", "int4", "f32"} {
		if code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "hi", "--response", "hello there", "--kv-cache", kv, "--json"); code == 1 || code == 2 || !strings.Contains(out, `"decision"`) {
			t.Errorf("moderate --kv-cache %s: %d %s %s", kv, code, out, errs)
		}
	}
	if code, _, errs := run(t, "forward", "--model", dir, "--ids", "1,2,3", "--kv-cache", "bf16", "--out", filepath.Join(t.TempDir(), "f.json")); code != 0 {
		t.Errorf("forward --kv-cache bf16: %d %s", code, errs)
	}
	for _, cmd := range [][]string{
		{"bench", "--preset", "tiny"},
		{"moderate", "--model", dir, "--prompt", "hi"},
		{"forward", "--model", dir, "--ids", "1"},
		{"eval", "--model", dir, "--data", "x.jsonl"},
		{"serve", "--model", dir},
	} {
		if code, _, errs := run(t, append(cmd, "--kv-cache", "fp8")...); code != 2 || !strings.Contains(errs, "fp8") {
			t.Errorf("%s --kv-cache fp8: exit %d, %s", cmd[0], code, errs)
		}
	}
}
