package synth_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/synth"
)

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// TestHeadsGiveMixedVerdicts runs the generated tiny model through the
// engine: the guard heads must not be stuck on one class, or downstream
// streaming tests could not see verdicts change. 256 positions over
// pseudo-random token ids; each risk class must win at least 5% of them.
func TestHeadsGiveMixedVerdicts(t *testing.T) {
	for _, dtype := range []string{"f32", "bf16"} {
		dir := filepath.Join(t.TempDir(), "m")
		if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: dtype, Seed: 1}); err != nil {
			t.Fatal(err)
		}
		m, set, err := qwen3.OpenFolder(dir, qwen3.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer set.Close()
		ids := make([]int, 256)
		x := uint32(12345)
		for i := range ids {
			x = x*1664525 + 1013904223
			ids[i] = int(x>>8) % 151643
		}
		out, err := m.Forward([]qwen3.Sequence{{Cache: m.NewCache(), IDs: ids}}, qwen3.ForwardOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, head := range []struct {
			name   string
			logits [][]float32
		}{{"response risk", out[0].Risk}, {"query risk", out[0].QueryRisk}, {"response category", out[0].Category}} {
			counts := make([]int, len(head.logits[0]))
			for _, l := range head.logits {
				counts[argmax(l)]++
			}
			t.Logf("%s %s argmax counts %v", dtype, head.name, counts)
			if len(counts) == 3 && slices.Min(counts) < len(ids)/20 {
				t.Errorf("%s %s: argmax counts %v, want every class ≥ 5%%", dtype, head.name, counts)
			}
		}
	}
}
