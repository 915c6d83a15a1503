// Package checkpoint knows which tensors a Qwen3Guard-Stream model folder
// must hold for its config.json, and judges a folder against that list
// (the strict load report behind `streamguard verify`).
package checkpoint

import (
	"fmt"
	"strings"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// Quant says how a tensor is stored.
type Quant string

const (
	Plain Quant = "plain" // a float tensor used as is
	AWQ   Quant = "AWQ"   // part of an AWQ GEMM qweight/qzeros/scales(/bias) set
)

// Kind is the role of a tensor in the model, which decides how gen-model
// fills it and how verify describes it.
type Kind string

const (
	Embedding  Kind = "embedding"  // model.embed_tokens.weight [vocab, hidden]
	Norm       Kind = "norm"       // an RMSNorm weight
	Linear     Kind = "linear"     // an nn.Linear weight [out, in]
	Classifier Kind = "classifier" // a guard head output layer [classes, G]
	QWeight    Kind = "qweight"    // AWQ packed codes [in, out/8]
	QZeros     Kind = "qzeros"     // AWQ packed zero points [in/group, out/8]
	Scales     Kind = "scales"     // AWQ scales [in/group, out]
	Bias       Kind = "bias"       // AWQ Linear bias [out]
)

// Unknown marks a dimension that the config does not determine (the guard
// head width of a config without guard_inner_size); any size matches it.
const Unknown = -1

// MaxLayers bounds num_hidden_layers for which tensors are listed (real
// Qwen3 models have at most 94), so a corrupt config cannot make the
// expectation list enormous. It is config.Validate's limit.
const MaxLayers = config.MaxLayers

// Expectation is one tensor a complete model needs (or, when Optional,
// may have).
type Expectation struct {
	Name     string              // tensor name in the checkpoint
	Module   string              // dotted module path, e.g. model.layers.3.mlp.down_proj
	Kind     Kind                // role, see Kind
	Shape    []int               // expected shape; Unknown dims match anything
	DTypes   []safetensors.DType // accepted dtypes, preferred first
	Quant    Quant               // Plain or AWQ
	Optional bool                // may be absent (an AWQ Linear's bias, qzeros without zero_point)
}

// HeadNames are the 8 guard head tensors (query and response pairs: pre,
// norm, risk, category), in checkpoint order.
var HeadNames = []string{
	"risk_level_category_pre.weight",
	"risk_level_category_layernorm.weight",
	"risk_level_head.weight",
	"category_head.weight",
	"query_risk_level_category_pre.weight",
	"query_risk_level_category_layernorm.weight",
	"query_risk_level_head.weight",
	"query_category_head.weight",
}

// HeadModules are the module paths of the 8 guard heads, the entries an AWQ
// export lists in modules_to_not_convert.
func HeadModules() []string {
	m := make([]string, len(HeadNames))
	for i, n := range HeadNames {
		m[i] = strings.TrimSuffix(n, ".weight")
	}
	return m
}

var floatDTypes = []safetensors.DType{safetensors.BF16, safetensors.F16, safetensors.F32}

// awqFloatDTypes lists fp16 first: AWQ exports store everything that is not
// packed in fp16.
var awqFloatDTypes = []safetensors.DType{safetensors.F16, safetensors.BF16, safetensors.F32}

// Expected lists every tensor of a complete guard model for cfg, in
// checkpoint order: the Qwen3 backbone (no lm_head), then the 8 heads
// whose widths come from guard_inner_size and the label maps. With an AWQ
// quantization_config every decoder-layer Linear becomes a
// qweight/qzeros/scales set (AutoAWQ GEMM layout) unless its module path contains
// an entry of modules_to_not_convert. The heads are listed even for a
// non-guard config (with Unknown width when guard_inner_size is absent), so
// a report on such a folder shows them missing. An lm_head is never
// expected: the guard has none.
//
// Expected returns nil when a size it needs is not positive or
// num_hidden_layers exceeds MaxLayers; Report states that as a problem.
func Expected(cfg *config.Config) []Expectation {
	h, v, inter, hd := cfg.HiddenSize, cfg.VocabSize, cfg.IntermediateSize, cfg.HeadDim
	for _, d := range []int{h, v, inter, hd, cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.NumHiddenLayers} {
		if d <= 0 {
			return nil
		}
	}
	if cfg.NumHiddenLayers > MaxLayers {
		return nil
	}
	floats := floatDTypes
	var q *config.Quantization
	if cfg.IsAWQ() {
		q = cfg.QuantizationConfig
		floats = awqFloatDTypes
	}
	var out []Expectation
	plain := func(module string, kind Kind, shape ...int) {
		out = append(out, Expectation{Name: module + ".weight", Module: module, Kind: kind, Shape: shape, DTypes: floats, Quant: Plain})
	}
	linear := func(module string, outF, inF int) {
		if q == nil || skipped(module, q.ModulesToNotConvert) {
			plain(module, Linear, outF, inF)
			return
		}
		out = append(out, awqLinear(module, outF, inF, q)...)
	}
	lin := layerLinears(cfg)
	plain("model.embed_tokens", Embedding, v, h)
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf("model.layers.%d.", i)
		plain(p+"input_layernorm", Norm, h)
		for j, l := range lin {
			linear(p+l.suffix, l.out, l.in)
			if j == 3 { // after o_proj, as the attention block's norms
				plain(p+"self_attn.q_norm", Norm, hd)
				plain(p+"self_attn.k_norm", Norm, hd)
				plain(p+"post_attention_layernorm", Norm, h)
			}
		}
	}
	plain("model.norm", Norm, h)
	g := cfg.GuardInnerSize
	if g <= 0 {
		g = Unknown
	}
	nr, nc, nqr, nqc := HeadClasses(cfg)
	// The heads are never quantized (AutoAWQ only converts Linears inside
	// decoder layers), whatever modules_to_not_convert says.
	heads := []struct {
		module string
		kind   Kind
		shape  []int
	}{
		{"risk_level_category_pre", Linear, []int{g, h}},
		{"risk_level_category_layernorm", Norm, []int{g}},
		{"risk_level_head", Classifier, []int{nr, g}},
		{"category_head", Classifier, []int{nc, g}},
		{"query_risk_level_category_pre", Linear, []int{g, h}},
		{"query_risk_level_category_layernorm", Norm, []int{g}},
		{"query_risk_level_head", Classifier, []int{nqr, g}},
		{"query_category_head", Classifier, []int{nqc, g}},
	}
	for _, hd := range heads {
		plain(hd.module, hd.kind, hd.shape...)
	}
	return out
}

// HeadClasses gives the output sizes of the four guard heads: the label map
// sizes when they decode, else the num_* fields, else the upstream 3/8/3/9.
func HeadClasses(cfg *config.Config) (risk, category, queryRisk, queryCategory int) {
	pick := func(labels []string, num, def int) int {
		switch {
		case len(labels) > 0:
			return len(labels)
		case num > 0:
			return num
		}
		return def
	}
	var l config.Labels
	if got, err := cfg.Labels(); err == nil {
		l = *got
	}
	return pick(l.ResponseRisk, cfg.NumRiskLevel, len(config.RiskLabels)),
		pick(l.ResponseCategory, cfg.NumCategory, len(config.ResponseCategoryLabels)),
		pick(l.QueryRisk, cfg.NumQueryRiskLevel, len(config.RiskLabels)),
		pick(l.QueryCategory, cfg.NumQueryCategory, len(config.QueryCategoryLabels))
}

// skipped applies modules_to_not_convert the way vLLM and AutoAWQ do: a
// module stays unquantized when any entry is a substring of its path.
func skipped(module string, notConvert []string) bool {
	for _, m := range notConvert {
		if strings.Contains(module, m) {
			return true
		}
	}
	return false
}

// awqLinear is the GEMM tensor set of one quantized Linear with inF inputs
// and outF outputs. Sizes that do not divide are floored here; Report
// states the divisibility problem separately.
func awqLinear(module string, outF, inF int, q *config.Quantization) []Expectation {
	g := q.GroupSize
	if g <= 0 {
		g = 1
	}
	noZeros := q.ZeroPoint != nil && !*q.ZeroPoint
	i32 := []safetensors.DType{safetensors.I32}
	return []Expectation{
		{Name: module + ".qweight", Module: module, Kind: QWeight, Shape: []int{inF, outF / 8}, DTypes: i32, Quant: AWQ},
		{Name: module + ".qzeros", Module: module, Kind: QZeros, Shape: []int{inF / g, outF / 8}, DTypes: i32, Quant: AWQ, Optional: noZeros},
		{Name: module + ".scales", Module: module, Kind: Scales, Shape: []int{inF / g, outF}, DTypes: []safetensors.DType{safetensors.F16}, Quant: AWQ},
		{Name: module + ".bias", Module: module, Kind: Bias, Shape: []int{outF}, DTypes: awqFloatDTypes, Quant: AWQ, Optional: true},
	}
}

// AWQShapeProblems lists the quantized Linears of cfg whose sizes the GEMM
// layout cannot hold: in_features not a multiple of group_size, or
// out_features not a multiple of 8. One line per projection kind (the
// sizes are the same in every layer).
func AWQShapeProblems(cfg *config.Config) []string {
	if !cfg.IsAWQ() || cfg.NumHiddenLayers <= 0 {
		return nil
	}
	q := cfg.QuantizationConfig
	var probs []string
	for _, l := range layerLinears(cfg) {
		module := "model.layers.0." + l.suffix
		if skipped(module, q.ModulesToNotConvert) {
			continue
		}
		if q.GroupSize > 0 && l.in%q.GroupSize != 0 {
			probs = append(probs, fmt.Sprintf("quantization_config.group_size %d does not divide in_features %d of %s", q.GroupSize, l.in, l.suffix))
		}
		if l.out%8 != 0 {
			probs = append(probs, fmt.Sprintf("out_features %d of %s is not a multiple of 8, which AWQ GEMM packing needs", l.out, l.suffix))
		}
	}
	return probs
}

type layerLinear struct {
	suffix  string
	out, in int
}

// layerLinears lists the Linears of one decoder layer in checkpoint order.
func layerLinears(cfg *config.Config) []layerLinear {
	h, inter := cfg.HiddenSize, cfg.IntermediateSize
	qdim, kvdim := cfg.NumAttentionHeads*cfg.HeadDim, cfg.NumKeyValueHeads*cfg.HeadDim
	return []layerLinear{
		{"self_attn.q_proj", qdim, h},
		{"self_attn.k_proj", kvdim, h},
		{"self_attn.v_proj", kvdim, h},
		{"self_attn.o_proj", h, qdim},
		{"mlp.gate_proj", inter, h},
		{"mlp.up_proj", inter, h},
		{"mlp.down_proj", h, inter},
	}
}
