package gpu

import (
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/qwen3"
)

// TestReport measures the GPU backend for scripts/gpu-check.sh and writes
// the figures as JSON to $STREAMGUARD_GPU_REPORT: the device, copy
// bandwidth, weight upload, prefill, a single stream's step at positions
// 100 and 4,000, batched steps of 16, 64 and 256 streams, and a token
// judged by recomputing a 512-token prefix against one cached step, for each
// model in $STREAMGUARD_GPU_PRESETS (default: the 0.6B shape in BF16 and
// AWQ INT4, the 8B shape in AWQ INT4, with random weights; a name ending in
// -awq is a synthetic AWQ checkpoint, any other random BF16 weights). Each
// model is measured twice, with the tensor-core products and with the
// one-warp-per-row kernels alone (key "<name>:warps", fewer steps), for the
// ratio from the same run. It is a test, not a benchmark, so that one test
// binary carries every GPU check; without the variable it does nothing.
func TestReport(t *testing.T) {
	path := os.Getenv("STREAMGUARD_GPU_REPORT")
	if path == "" {
		t.Skip("STREAMGUARD_GPU_REPORT is not set: no report wanted")
	}
	ctx := openGPU(t)
	rep := map[string]any{"device": ctx.Device}
	presets := []string{"qwen3guard-stream-0.6b", "qwen3guard-stream-0.6b-awq", "qwen3guard-stream-8b-awq"}
	if p := os.Getenv("STREAMGUARD_GPU_PRESETS"); p != "" {
		presets = slices.Collect(func(yield func(string) bool) {
			for _, s := range splitComma(p) {
				if !yield(s) {
					return
				}
			}
		})
	}
	models := map[string]any{}
	rep["models"] = models
	// Written after each measurement, so that a run cut short keeps what
	// it measured.
	write := func() {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range presets {
		start := time.Now()
		var net *qwen3.Model
		if base, ok := strings.CutSuffix(p, "-awq"); ok {
			net = awqNetwork(t, base, 0, true) // speed only: no CPU forward
		} else {
			net = network(t, p, 0, 11)
		}
		gen := time.Since(start)
		for _, warps := range []bool{false, true} {
			name, steps := p, 15
			if warps {
				name, steps = p+":warps", 7
			}
			bo := BenchOptions{Prefill: 512, Positions: []int{100, 4000}, Streams: []int{16, 64, 256}, Steps: steps, Seed: 7,
				Recompute: 512, Model: Options{NoTensorCores: warps}}
			if standIn(ctx) {
				// Plain loops: the code paths, not the times.
				bo.Steps, bo.Positions, bo.Streams, bo.CopyBytes, bo.Recompute = 2, []int{100, 600}, []int{16, 64}, 1<<20, 64
			}
			m, err := Bench(ctx, net, bo)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				models[name] = map[string]any{"error": err.Error()}
				continue
			}
			models[name] = map[string]any{"random_weights_s": gen.Seconds(), "bench": m}
			t.Logf("%s: %+v", name, m)
			write()
		}
	}
	write()
}

func splitComma(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != ',' {
			i++
		}
		if i > 0 {
			out = append(out, s[:i])
		}
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
