package config

import (
	"fmt"
	"sort"
)

// Upstream label names (Qwen3Guard's categories). The exact strings in the official
// config.json are unconfirmed; streamguard always reads names from the
// model's config, and these are only what gen-model writes.
var (
	RiskLabels             = []string{"Safe", "Unsafe", "Controversial"}
	ResponseCategoryLabels = []string{"Violent", "Sexual Content or Sexual Acts", "Suicide & Self-Harm",
		"Politically Sensitive Topics", "PII", "Copyright Violation", "Non-violent Illegal Acts", "Unethical Acts"}
	QueryCategoryLabels = append(append([]string{}, ResponseCategoryLabels...), "Jailbreak")
)

// presets are the shapes gen-model and bench build. The 0.6B/4B/8B rows are
// the released checkpoints' shapes; guard_inner_size is confirmed (512) for 0.6B only, and 4B/8B use
// 1024 as a stand-in until a real config is read.
var presets = map[string]Config{
	"tiny": {VocabSize: 151936, HiddenSize: 64, IntermediateSize: 128, NumHiddenLayers: 2,
		NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 16, MaxPositionEmbeddings: 8192,
		TieWordEmbeddings: true, GuardInnerSize: 32},
	"qwen3guard-stream-0.6b": {VocabSize: 151936, HiddenSize: 1024, IntermediateSize: 3072, NumHiddenLayers: 28,
		NumAttentionHeads: 16, NumKeyValueHeads: 8, HeadDim: 128, MaxPositionEmbeddings: 8192,
		TieWordEmbeddings: true, GuardInnerSize: 512},
	"qwen3guard-stream-4b": {VocabSize: 151936, HiddenSize: 2560, IntermediateSize: 9728, NumHiddenLayers: 36,
		NumAttentionHeads: 32, NumKeyValueHeads: 8, HeadDim: 128, MaxPositionEmbeddings: 8192,
		TieWordEmbeddings: true, GuardInnerSize: 1024},
	"qwen3guard-stream-8b": {VocabSize: 151936, HiddenSize: 4096, IntermediateSize: 12288, NumHiddenLayers: 36,
		NumAttentionHeads: 32, NumKeyValueHeads: 8, HeadDim: 128, MaxPositionEmbeddings: 8192,
		TieWordEmbeddings: false, GuardInnerSize: 1024},
}

// PresetNames lists the preset names, sorted.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns a complete guard config for a named shape, with the shared
// Qwen3 fields and the upstream label maps filled in.
func Preset(name string) (*Config, error) {
	p, ok := presets[name]
	if !ok {
		return nil, fmt.Errorf("unknown preset %q (have %v)", name, PresetNames())
	}
	c := p
	c.Architectures = []string{GuardArchitecture}
	c.ModelType = "qwen3"
	c.RMSNormEps = 1e-6
	c.RopeTheta = 1e6
	c.TorchDtype = "bfloat16"
	bos := 151643
	c.BosTokenID = &bos
	c.EosTokenID = 151645
	c.NumRiskLevel = len(RiskLabels)
	c.NumCategory = len(ResponseCategoryLabels)
	c.NumQueryRiskLevel = len(RiskLabels)
	c.NumQueryCategory = len(QueryCategoryLabels)
	c.ResponseRiskLevelMap = SliceToMap(RiskLabels)
	c.QueryRiskLevelMap = SliceToMap(RiskLabels)
	c.ResponseCategoryMap = SliceToMap(ResponseCategoryLabels)
	c.QueryCategoryMap = SliceToMap(QueryCategoryLabels)
	return &c, nil
}
