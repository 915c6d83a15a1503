//go:build cuda

package guard

import (
	"context"
	"math"
	"os"
	"testing"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestGPUMatchesCPU moderates the same conversations on the CPU and on GPU
// 0 and compares the verdicts: the GPU's bf16 KV cache and its summation
// order move probabilities slightly (see internal/gpu's tolerance), so the
// risk levels must agree on at least 98% of the tokens and the prompts'
// verdicts must be equal. Runs only in a cuda build on a GPU machine
// (scripts/gpu-check.sh).
func TestGPUMatchesCPU(t *testing.T) {
	// bf16 weights, as the checkpoints the GPU backend takes are stored.
	cpu := tinyModelOf(t, "tiny", nil, qwen3.KVF32, safetensors.BF16)
	e, err := newGPUEngine(cpu.net, 0)
	if err != nil {
		if os.Getenv("STREAMGUARD_REQUIRE_GPU") != "" {
			t.Fatalf("no GPU: %v", err)
		}
		t.Skipf("no GPU to run on: %v", err)
	}
	// The CPU model's fields with the GPU's engine (a Model holds a lock,
	// so it is not copied whole).
	gm := &Model{net: cpu.net, eng: e, tok: cpu.tok, policy: cpu.policy, scaffold: cpu.scaffold,
		unsafeIdx: cpu.unsafeIdx, contIdx: cpu.contIdx, queryUnsafeIdx: cpu.queryUnsafeIdx, queryContIdx: cpu.queryContIdx}
	defer e.close()
	convs := [][]Message{
		{{Role: "user", Content: "How do I bake bread?"}, {Role: "assistant", Content: "Mix flour, water, salt and yeast; knead; let it rise; bake at 230 degrees."}},
		{{Role: "system", Content: "Be brief."}, {Role: "user", Content: "Tell me about tea."}, {Role: "assistant", Content: "Tea is brewed from the leaves of Camellia sinensis."}},
	}
	same, total := 0, 0
	for _, msgs := range convs {
		a, err := cpu.Moderate(context.Background(), msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := gm.Moderate(context.Background(), msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.Prompt.Risk != b.Prompt.Risk || a.Prompt.Position != b.Prompt.Position {
			t.Errorf("prompt verdict: CPU %s at %d, GPU %s at %d", a.Prompt.Risk, a.Prompt.Position, b.Prompt.Risk, b.Prompt.Position)
		}
		for i := range a.Tokens {
			total++
			if a.Tokens[i].Risk == b.Tokens[i].Risk {
				same++
			}
		}
	}
	t.Logf("GPU vs CPU: %d of %d token risk levels agree", same, total)
	if float64(same) < 0.98*float64(total) {
		t.Errorf("only %d of %d token risk levels agree", same, total)
	}
	// The tools' path (guardhook.Forward: forward, train-heads' features):
	// hidden states from the GPU within 1e-2 relative L2 of the CPU's.
	ids := [][]int{{9, 8, 7, 6, 5, 4, 3, 2, 1}, {100, 200, 300}}
	co, err := cpu.forwardFresh(ids)
	if err != nil {
		t.Fatal(err)
	}
	gout, err := gm.forwardFresh(ids)
	if err != nil {
		t.Fatal(err)
	}
	var num, den float64
	for i := range co {
		for j := range co[i].Hidden {
			for k, v := range co[i].Hidden[j] {
				d := float64(gout[i].Hidden[j][k] - v)
				num += d * d
				den += float64(v) * float64(v)
			}
		}
	}
	rel := math.Sqrt(num / den)
	t.Logf("hidden states, GPU vs CPU: relative L2 %.3g", rel)
	if !(rel <= 1e-2) {
		t.Errorf("hidden states: relative L2 %.3g, want ≤ 1e-2", rel)
	}
}
