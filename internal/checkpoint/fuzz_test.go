package checkpoint_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/synth"
)

// FuzzReportConfig feeds arbitrary config.json bytes to config.Parse and to
// Report over a fixed generated checkpoint: neither may panic, and a
// report on anything but the original config must not be OK unless the
// config parses as a guard model.
func FuzzReportConfig(f *testing.F) {
	dir := gen(f, synth.Options{DType: "awq"})
	orig, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(orig)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"architectures":["Qwen3ForCausalLM"],"hidden_size":64,"num_hidden_layers":2}`))
	f.Add([]byte(`{"num_hidden_layers": 1024, "hidden_size": 1, "vocab_size": 1, "intermediate_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 1}`))
	f.Add([]byte(`{"quantization_config": {"quant_method": "awq", "group_size": 0, "bits": 4}, "hidden_size": -8}`))
	f.Add([]byte(`{"response_risk_level_map": {"0": "Safe", "5": "x"}, "guard_inner_size": 1e9}`))
	f.Add([]byte(`[1, 2`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if c, err := config.Parse(b); err == nil {
			c.Validate(true)
			c.Validate(false)
			checkpoint.Expected(c)
			checkpoint.AWQShapeProblems(c)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
		r, err := checkpoint.Report(dir)
		if err != nil {
			t.Fatal(err)
		}
		if r.OK() && !r.Guard {
			t.Fatalf("non-guard config accepted: %s", b)
		}
	})
}
