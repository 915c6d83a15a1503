package checkpoint_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// miniFolder writes a complete AWQ guard folder at the tiny shapes but with
// a 256-token vocabulary and zero weights: cheap enough for every fuzz
// worker to build (Report reads headers only, so the values do not matter).
func miniFolder(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	cfg, err := config.Preset("tiny")
	if err != nil {
		tb.Fatal(err)
	}
	cfg.VocabSize = 256
	zp := true
	cfg.QuantizationConfig = &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: 64, ZeroPoint: &zp, Version: "gemm",
		ModulesToNotConvert: checkpoint.HeadModules()}
	if err := cfg.Write(dir); err != nil {
		tb.Fatal(err)
	}
	var ts []*safetensors.Tensor
	for _, e := range checkpoint.Expected(cfg) {
		if e.Optional {
			continue
		}
		n := e.DTypes[0].Size()
		for _, d := range e.Shape {
			n *= d
		}
		ts = append(ts, &safetensors.Tensor{Name: e.Name, DType: e.DTypes[0], Shape: e.Shape, Data: make([]byte, n)})
	}
	if err := safetensors.WriteFile(filepath.Join(dir, safetensors.SingleFile), nil, ts); err != nil {
		tb.Fatal(err)
	}
	for _, name := range checkpoint.TokenizerFiles {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("{}"), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// FuzzReportConfig feeds arbitrary config.json bytes to config.Parse and to
// Report over a fixed checkpoint: neither may panic, and a report must not
// be OK unless the config declares a guard model.
func FuzzReportConfig(f *testing.F) {
	dir := miniFolder(f)
	if r, err := checkpoint.Report(dir); err != nil || !r.OK() {
		f.Fatalf("fixture not OK: %v %+v", err, r)
	}
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
	f.Add(bytes.Replace(orig, []byte(`"max_position_embeddings": 8192`), []byte(`"max_position_embeddings": 2000000000`), 1))
	f.Add(bytes.Replace(orig, []byte(`"num_hidden_layers": 2`), []byte(`"num_hidden_layers": 1025`), 1))
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
