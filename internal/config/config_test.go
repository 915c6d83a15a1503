package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPresetsValidate(t *testing.T) {
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(true); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		l, err := c.Labels()
		if err != nil {
			t.Fatal(err)
		}
		if len(l.QueryCategory) != 9 || l.QueryCategory[8] != "Jailbreak" || len(l.ResponseCategory) != 8 {
			t.Errorf("%s: labels %+v", name, l)
		}
	}
	c, _ := Preset("qwen3guard-stream-8b")
	if c.HiddenSize != 4096 || c.IntermediateSize != 12288 || c.NumHiddenLayers != 36 || c.TieWordEmbeddings {
		t.Errorf("8b preset: %+v", c)
	}
}

func TestRoundTripKeepsUnknownFields(t *testing.T) {
	c, _ := Preset("tiny")
	c.Extra = map[string]json.RawMessage{"auto_map": json.RawMessage(`{"AutoConfig":"configuration_qwen3.Qwen3Config"}`)}
	dir := t.TempDir()
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	d, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, d.Extra["auto_map"]); err != nil || compact.String() != `{"AutoConfig":"configuration_qwen3.Qwen3Config"}` {
		t.Errorf("auto_map lost: %s", d.Extra["auto_map"])
	}
	if d.HiddenSize != 64 || d.GuardInnerSize != 32 || d.QueryCategoryMap["8"] != "Jailbreak" {
		t.Errorf("round trip: %+v", d)
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"heads", func(c *Config) { c.NumKeyValueHeads = 3 }, "not a multiple"},
		{"scaling", func(c *Config) { c.RopeScaling = map[string]any{"type": "yarn"} }, "rope_scaling"},
		{"negative", func(c *Config) { c.HiddenSize = -1 }, "hidden_size must be positive"},
		{"labelkey", func(c *Config) { c.QueryCategoryMap = map[string]string{"0": "a", "2": "b"} }, "query_category_map"},
		{"count", func(c *Config) { c.NumCategory = 7 }, "num_* field says 7"},
		{"safe", func(c *Config) { c.ResponseRiskLevelMap = SliceToMap([]string{"Unsafe", "Safe", "Controversial"}) }, "\"Safe\""},
		{"quant", func(c *Config) { c.QuantizationConfig = &Quantization{QuantMethod: "gptq", Bits: 4, GroupSize: 128} }, "quant_method"},
		{"version", func(c *Config) {
			c.QuantizationConfig = &Quantization{QuantMethod: "awq", Bits: 4, GroupSize: 128, Version: "gemv"}
		}, "GEMM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := Preset("tiny")
			tc.mutate(c)
			err := c.Validate(true)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestOldQuantConfig(t *testing.T) {
	c, _ := Preset("tiny")
	dir := t.TempDir()
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "quant_config.json"), []byte(`{"w_bit":4,"q_group_size":128,"zero_point":true,"version":"GEMM"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	q := d.QuantizationConfig
	if !d.IsAWQ() || q.Bits != 4 || q.GroupSize != 128 || q.ZeroPoint == nil || !*q.ZeroPoint {
		t.Fatalf("quant_config.json not folded in: %+v", q)
	}
	if err := d.Validate(true); err != nil {
		t.Fatal(err)
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	for _, b := range []string{``, `{`, `[]`, `{"hidden_size": "big"}`, `{"response_risk_level_map": [1]}`} {
		if _, err := Parse([]byte(b)); err == nil {
			t.Errorf("Parse(%q) succeeded", b)
		}
	}
}

func FuzzParse(f *testing.F) {
	c, _ := Preset("tiny")
	b, _ := json.Marshal(c)
	f.Add(b)
	f.Add([]byte(`{"quantization_config":{"w_bit":4}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		_ = c.Validate(true)
		_, _ = c.Labels()
	})
}
