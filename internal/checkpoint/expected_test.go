package checkpoint

import (
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

func preset(t *testing.T, name string) *config.Config {
	t.Helper()
	c, err := config.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func awqConfig(t *testing.T, name string, notConvert ...string) *config.Config {
	c := preset(t, name)
	zp := true
	c.QuantizationConfig = &config.Quantization{QuantMethod: "awq", Bits: 4, GroupSize: 128, ZeroPoint: &zp, Version: "gemm",
		ModulesToNotConvert: notConvert}
	return c
}

func byName(exps []Expectation) map[string]Expectation {
	m := map[string]Expectation{}
	for _, e := range exps {
		m[e.Name] = e
	}
	return m
}

func wantShape(t *testing.T, m map[string]Expectation, name string, shape ...int) {
	t.Helper()
	e, ok := m[name]
	if !ok {
		t.Errorf("%s not expected", name)
		return
	}
	if !slices.Equal(e.Shape, shape) {
		t.Errorf("%s shape %v, want %v", name, e.Shape, shape)
	}
}

// TestExpectedPresets pins tensor counts and shapes for every preset (the
// released checkpoints' layout): 11 tensors per layer, embedding, final norm and 8 heads.
func TestExpectedPresets(t *testing.T) {
	counts := map[string]int{"tiny": 1 + 2*11 + 1 + 8, "qwen3guard-stream-0.6b": 1 + 28*11 + 1 + 8,
		"qwen3guard-stream-4b": 1 + 36*11 + 1 + 8, "qwen3guard-stream-8b": 1 + 36*11 + 1 + 8}
	for _, name := range config.PresetNames() {
		exps := Expected(preset(t, name))
		if want, ok := counts[name]; !ok || len(exps) != want {
			t.Errorf("%s: %d tensors, want %d", name, len(exps), counts[name])
		}
		for _, e := range exps {
			if e.Quant != Plain || e.Optional || !slices.Contains(e.DTypes, safetensors.BF16) {
				t.Errorf("%s: %s: %+v", name, e.Name, e)
			}
			if strings.HasPrefix(e.Name, "lm_head") {
				t.Errorf("%s: lm_head expected", name)
			}
		}
		if exps[0].Name != "model.embed_tokens.weight" || exps[len(exps)-1].Name != "query_category_head.weight" {
			t.Errorf("%s: order starts %s, ends %s", name, exps[0].Name, exps[len(exps)-1].Name)
		}
	}
	m := byName(Expected(preset(t, "qwen3guard-stream-0.6b")))
	wantShape(t, m, "model.embed_tokens.weight", 151936, 1024)
	wantShape(t, m, "model.layers.0.self_attn.q_proj.weight", 2048, 1024)
	wantShape(t, m, "model.layers.27.self_attn.k_proj.weight", 1024, 1024)
	wantShape(t, m, "model.layers.3.self_attn.o_proj.weight", 1024, 2048)
	wantShape(t, m, "model.layers.3.self_attn.q_norm.weight", 128)
	wantShape(t, m, "model.layers.5.mlp.down_proj.weight", 1024, 3072)
	wantShape(t, m, "model.layers.5.mlp.gate_proj.weight", 3072, 1024)
	wantShape(t, m, "model.norm.weight", 1024)
	wantShape(t, m, "risk_level_category_pre.weight", 512, 1024)
	wantShape(t, m, "risk_level_category_layernorm.weight", 512)
	wantShape(t, m, "risk_level_head.weight", 3, 512)
	wantShape(t, m, "category_head.weight", 8, 512)
	wantShape(t, m, "query_risk_level_head.weight", 3, 512)
	wantShape(t, m, "query_category_head.weight", 9, 512)
	if _, ok := m["model.layers.28.input_layernorm.weight"]; ok {
		t.Error("layer 28 of a 28-layer model expected")
	}
	m = byName(Expected(preset(t, "qwen3guard-stream-8b")))
	wantShape(t, m, "model.layers.35.self_attn.v_proj.weight", 1024, 4096)
	wantShape(t, m, "model.layers.35.mlp.up_proj.weight", 12288, 4096)
}

// TestExpectedAWQ8B checks the GEMM triplet shapes: qweight [in, out/8],
// qzeros [in/G, out/8], scales [in/G, out].
func TestExpectedAWQ8B(t *testing.T) {
	exps := Expected(awqConfig(t, "qwen3guard-stream-8b", HeadModules()...))
	m := byName(exps)
	wantShape(t, m, "model.layers.0.mlp.down_proj.qweight", 12288, 512)
	wantShape(t, m, "model.layers.0.mlp.down_proj.qzeros", 96, 512)
	wantShape(t, m, "model.layers.0.mlp.down_proj.scales", 96, 4096)
	wantShape(t, m, "model.layers.7.self_attn.q_proj.qweight", 4096, 512)
	wantShape(t, m, "model.layers.7.self_attn.q_proj.qzeros", 32, 512)
	wantShape(t, m, "model.layers.7.self_attn.q_proj.scales", 32, 4096)
	wantShape(t, m, "model.layers.7.self_attn.o_proj.qweight", 4096, 512)
	wantShape(t, m, "model.layers.9.self_attn.k_proj.qweight", 4096, 128)
	wantShape(t, m, "model.layers.9.self_attn.k_proj.qzeros", 32, 128)
	wantShape(t, m, "model.layers.9.self_attn.k_proj.scales", 32, 1024)
	wantShape(t, m, "model.layers.35.mlp.gate_proj.qweight", 4096, 1536)
	wantShape(t, m, "model.layers.35.mlp.gate_proj.qzeros", 32, 1536)
	wantShape(t, m, "model.layers.35.mlp.gate_proj.scales", 32, 12288)
	wantShape(t, m, "model.layers.35.mlp.down_proj.bias", 4096)
	if e := m["model.layers.0.mlp.down_proj.qweight"]; !slices.Equal(e.DTypes, []safetensors.DType{safetensors.I32}) || e.Quant != AWQ {
		t.Errorf("qweight %+v", e)
	}
	if e := m["model.layers.0.mlp.down_proj.scales"]; !slices.Equal(e.DTypes, []safetensors.DType{safetensors.F16}) {
		t.Errorf("scales dtypes %v", e.DTypes)
	}
	if e := m["model.layers.0.mlp.down_proj.bias"]; !e.Optional {
		t.Error("bias not optional")
	}
	if e := m["model.layers.0.input_layernorm.weight"]; e.DTypes[0] != safetensors.F16 || e.Quant != Plain {
		t.Errorf("norm in AWQ bundle: %+v", e)
	}
	if e := m["risk_level_category_pre.weight"]; e.Quant != Plain {
		t.Errorf("head quantized: %+v", e)
	}
	if _, ok := m["model.layers.0.mlp.down_proj.weight"]; ok {
		t.Error("plain down_proj expected in AWQ bundle")
	}
	// 36 layers × 7 Linears × 4 tensors + 36 × 4 norms + embed + norm + 8 heads.
	if want := 36*7*4 + 36*4 + 2 + 8; len(exps) != want {
		t.Errorf("%d expectations, want %d", len(exps), want)
	}
}

// TestModulesToNotConvert uses substring semantics as vLLM does.
func TestModulesToNotConvert(t *testing.T) {
	m := byName(Expected(awqConfig(t, "qwen3guard-stream-0.6b", "mlp.down_proj", "layers.3.self_attn")))
	wantShape(t, m, "model.layers.0.mlp.down_proj.weight", 1024, 3072)
	wantShape(t, m, "model.layers.0.mlp.up_proj.qweight", 1024, 384)
	wantShape(t, m, "model.layers.3.self_attn.q_proj.weight", 2048, 1024)
	wantShape(t, m, "model.layers.13.self_attn.q_proj.qweight", 1024, 256)
	if _, ok := m["model.layers.3.self_attn.q_proj.qweight"]; ok {
		t.Error("layers.3.self_attn also matched layer 3 quantized")
	}
	// Without zero_point, qzeros become optional (z = 8).
	c := awqConfig(t, "tiny")
	c.QuantizationConfig.GroupSize = 64
	f := false
	c.QuantizationConfig.ZeroPoint = &f
	if e := byName(Expected(c))["model.layers.0.mlp.up_proj.qzeros"]; !e.Optional {
		t.Error("qzeros required with zero_point false")
	}
}

func TestExpectedUnusable(t *testing.T) {
	c := preset(t, "tiny")
	c.NumHiddenLayers = MaxLayers + 1
	if Expected(c) != nil {
		t.Error("too many layers accepted")
	}
	c = preset(t, "tiny")
	c.HeadDim = 0
	if Expected(c) != nil {
		t.Error("head_dim 0 accepted")
	}
	// A config without guard fields still lists the heads, with unknown width.
	c = preset(t, "tiny")
	c.GuardInnerSize = 0
	m := byName(Expected(c))
	wantShape(t, m, "risk_level_category_pre.weight", Unknown, 64)
	wantShape(t, m, "query_category_head.weight", 9, Unknown)
}

func TestAWQShapeProblems(t *testing.T) {
	c := awqConfig(t, "tiny") // hidden 64 < group 128
	p := AWQShapeProblems(c)
	if len(p) == 0 || !strings.Contains(p[0], "group_size 128 does not divide in_features 64 of self_attn.q_proj") {
		t.Errorf("problems %q", p)
	}
	c.QuantizationConfig.GroupSize = 64
	if p := AWQShapeProblems(c); len(p) != 0 {
		t.Errorf("group 64: %q", p)
	}
	if p := AWQShapeProblems(awqConfig(t, "qwen3guard-stream-8b")); len(p) != 0 {
		t.Errorf("8B: %q", p)
	}
}
