package main

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestModerateNaNWeightFails: one NaN in the response risk head (a corrupt
// download, an F16 export of BF16 weights that overflowed) makes every
// response-risk logit NaN, which read as a verdict would be Safe (argmax
// lets no NaN win, no threshold compares true). moderate fails instead
// (exit 1, guard.ErrNonFinite's message) on a response the intact model
// flags.
func TestModerateNaNWeightFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	const diverging = "I gun do I eat me money slowly" // flagged by the intact model (TestModerateRules)
	if code, _, _ := run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", diverging); code != 3 {
		t.Fatalf("intact model: exit %d, want 3", code)
	}

	// Write one NaN into risk_level_head.weight, in place.
	path := filepath.Join(dir, "model.safetensors")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	var info struct {
		DType   string  `json:"dtype"`
		Offsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr["risk_level_head.weight"], &info); err != nil || info.DType != "F32" {
		t.Fatalf("risk_level_head.weight: %s %v", info.DType, err)
	}
	binary.LittleEndian.PutUint32(b[8+int64(n)+info.Offsets[0]:], math.Float32bits(float32(math.NaN())))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errs := run(t, "moderate", "--model", dir, "--prompt", "Hi", "--response", diverging)
	if code != 1 || !strings.Contains(errs, "not a finite number") {
		t.Errorf("one NaN in risk_level_head.weight: moderate exit %d, stderr %q; want 1 and the non-finite error:\n%.300s", code, errs, out)
	}
}
