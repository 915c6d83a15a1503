package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
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

// qwen3Shape is a Qwen3 backbone shape with the guard fields of the tiny
// preset.
func qwen3Shape(t *testing.T, hidden, inter, layers, heads, kv, maxPos int) *Config {
	t.Helper()
	c, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	c.HiddenSize, c.IntermediateSize, c.NumHiddenLayers = hidden, inter, layers
	c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.MaxPositionEmbeddings = heads, kv, 128, maxPos
	return c
}

// TestBoundsAdmitRealModels: the size limits leave every released Qwen3
// shape, at its longest context, inside them.
func TestBoundsAdmitRealModels(t *testing.T) {
	for name, c := range map[string]*Config{
		"0.6B": qwen3Shape(t, 1024, 3072, 28, 16, 8, 40960),
		"8B":   qwen3Shape(t, 4096, 12288, 36, 32, 8, 131072),
		"32B":  qwen3Shape(t, 5120, 25600, 64, 64, 8, 131072),
		"235B": qwen3Shape(t, 4096, 12288, 94, 64, 4, 262144),
		"max":  qwen3Shape(t, 8192, 29568, 94, 64, 8, MaxPositionEmbeddings/4),
	} {
		if err := c.Validate(true); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestValidateBounds: every field that sizes memory is refused when zero,
// negative or beyond its limit, with a message naming the field, the value
// and the limit; so are products of in-range fields that would be too big.
func TestValidateBounds(t *testing.T) {
	type tc struct {
		name   string
		mutate func(*Config)
		want   []string
	}
	var cases []tc
	fields := []struct {
		name  string
		ptr   func(*Config) *int
		limit int
	}{
		{"vocab_size", func(c *Config) *int { return &c.VocabSize }, MaxVocabSize},
		{"hidden_size", func(c *Config) *int { return &c.HiddenSize }, MaxHiddenSize},
		{"intermediate_size", func(c *Config) *int { return &c.IntermediateSize }, MaxIntermediateSize},
		{"num_hidden_layers", func(c *Config) *int { return &c.NumHiddenLayers }, MaxLayers},
		{"num_attention_heads", func(c *Config) *int { return &c.NumAttentionHeads }, MaxAttentionHeads},
		{"num_key_value_heads", func(c *Config) *int { return &c.NumKeyValueHeads }, MaxAttentionHeads},
		{"head_dim", func(c *Config) *int { return &c.HeadDim }, MaxHeadDim},
		{"max_position_embeddings", func(c *Config) *int { return &c.MaxPositionEmbeddings }, MaxPositionEmbeddings},
	}
	for _, f := range fields {
		for _, v := range []int{0, -1, math.MinInt} {
			cases = append(cases, tc{fmt.Sprintf("%s=%d", f.name, v), func(c *Config) { *f.ptr(c) = v },
				[]string{fmt.Sprintf("%s must be positive, got %d", f.name, v)}})
		}
		for _, v := range []int{f.limit + 1, 2000000000, math.MaxInt} {
			cases = append(cases, tc{fmt.Sprintf("%s=%d", f.name, v), func(c *Config) { *f.ptr(c) = v },
				[]string{fmt.Sprintf("%s %d exceeds the limit %d", f.name, v, f.limit)}})
		}
	}
	for _, num := range []struct {
		name string
		ptr  func(*Config) *int
	}{
		{"num_risk_level", func(c *Config) *int { return &c.NumRiskLevel }},
		{"num_category", func(c *Config) *int { return &c.NumCategory }},
		{"num_query_risk_level", func(c *Config) *int { return &c.NumQueryRiskLevel }},
		{"num_query_category", func(c *Config) *int { return &c.NumQueryCategory }},
	} {
		cases = append(cases,
			tc{num.name + "=-1", func(c *Config) { *num.ptr(c) = -1 }, []string{num.name + " must be at least 1, got -1"}},
			tc{num.name + "=big", func(c *Config) { *num.ptr(c) = MaxLabels + 1 }, []string{fmt.Sprintf("%s %d exceeds the limit %d", num.name, MaxLabels+1, MaxLabels)}})
	}
	big := make([]string, MaxLabels+1)
	for i := range big {
		big[i] = fmt.Sprint("label", i)
	}
	big[0] = "Safe"
	cases = append(cases,
		tc{"guard_inner_size=0", func(c *Config) { c.GuardInnerSize = 0 }, []string{"guard_inner_size must be positive"}},
		tc{"guard_inner_size=big", func(c *Config) { c.GuardInnerSize = MaxHiddenSize + 1 }, []string{"guard_inner_size 32769 exceeds the limit 32768"}},
		tc{"label map too long", func(c *Config) { c.QueryCategoryMap, c.NumQueryCategory = SliceToMap(big), 0 },
			[]string{"query_category_map: 1025 labels exceed the limit 1024"}},
		tc{"projection width", func(c *Config) { c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim = 1024, 1, 256 },
			[]string{"num_attention_heads × head_dim = 1024 × 256 = 262144 exceeds the limit 131072"}},
		tc{"kv per position", func(c *Config) {
			c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim = 1024, 64, 64, 128
		},
			[]string{"KV cache costs 67108864 bytes per position", "num_hidden_layers 1024", "limit 16777216"}},
		tc{"kv per stream", func(c *Config) {
			c.NumHiddenLayers, c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim, c.MaxPositionEmbeddings = 36, 32, 8, 128, MaxPositionEmbeddings
		}, []string{"max_position_embeddings 1048576: one full-length stream would need 309237645312 bytes of KV cache (294912 per position), more than the limit 274877906944"}},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := Preset("tiny")
			tc.mutate(c)
			err := c.Validate(true)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate = %v\nwant it to mention %q", err, w)
				}
			}
		})
	}
}

// TestParseNumFields: an explicit num_* of 0 is refused (omitempty cannot
// tell it from an absent field, Parse can); absent ones are fine.
func TestParseNumFields(t *testing.T) {
	c, _ := Preset("tiny")
	b, _ := json.Marshal(c)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "num_category")
	b, _ = json.Marshal(m)
	d, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(true); err != nil {
		t.Fatalf("absent num_category: %v", err)
	}
	m["num_category"] = 0
	b, _ = json.Marshal(m)
	if d, err = Parse(b); err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(true); err == nil || !strings.Contains(err.Error(), "num_category must be at least 1, got 0") {
		t.Fatalf("explicit num_category 0: %v", err)
	}
}

// TestParseHugePositions: the max_position_embeddings 2e9, as an
// integer and as JSON's exponent form, never gets past Parse and Validate.
func TestParseHugePositions(t *testing.T) {
	c, _ := Preset("tiny")
	b, _ := json.Marshal(c)
	for _, v := range []string{"2000000000", "2e9", "9223372036854775807", "1e300", "-2000000000"} {
		nb := bytes.Replace(b, []byte(`"max_position_embeddings":8192`), []byte(`"max_position_embeddings":`+v), 1)
		if bytes.Equal(nb, b) {
			t.Fatal("field not found")
		}
		d, err := Parse(nb)
		if err == nil {
			err = d.Validate(true)
		}
		if err == nil || !strings.Contains(err.Error(), "max_position_embeddings") {
			t.Errorf("%s: %v", v, err)
		}
	}
}

// FuzzParse: Parse and Validate never panic, and a config Validate accepts
// is inside every size limit, so nothing sized from it can be enormous.
func FuzzParse(f *testing.F) {
	c, _ := Preset("tiny")
	b, _ := json.Marshal(c)
	f.Add(b)
	f.Add([]byte(`{"quantization_config":{"w_bit":4}}`))
	for _, r := range []string{`"max_position_embeddings":2000000000`, `"max_position_embeddings":1048577`,
		`"max_position_embeddings":1048576`, `"num_hidden_layers":1024`, `"num_category":0`, `"head_dim":1024`,
		`"num_attention_heads":1024,"num_key_value_heads":1024`, `"vocab_size":-1`} {
		f.Add(bytes.Replace(b, []byte(`"max_position_embeddings":8192`), []byte(r), 1))
	}
	p8, _ := Preset("qwen3guard-stream-8b")
	b8, _ := json.Marshal(p8)
	f.Add(bytes.Replace(b8, []byte(`"max_position_embeddings":8192`), []byte(`"max_position_embeddings":1000000`), 1))
	f.Add([]byte(`{"quantization_config":{"quant_method":"awq","bits":4,"meta":{"quantizer":["x"]},"sym":false},"dtype":"bfloat16"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		// A rewrite (quantize, graft, train-heads) reads back as written:
		// every key kept, none twice.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		c2, err := Parse(out)
		if err != nil {
			t.Fatalf("the rewritten config %s is refused: %v", out, err)
		}
		if out2, _ := json.Marshal(c2); !bytes.Equal(out, out2) {
			t.Fatalf("rewriting changes the config:\n%s\n%s", out, out2)
		}
		_ = c.Validate(false)
		_, _ = c.Labels()
		if c.Validate(true) != nil {
			return
		}
		for _, f := range []struct{ v, limit int }{
			{c.VocabSize, MaxVocabSize}, {c.HiddenSize, MaxHiddenSize}, {c.IntermediateSize, MaxIntermediateSize},
			{c.NumHiddenLayers, MaxLayers}, {c.NumAttentionHeads, MaxAttentionHeads}, {c.NumKeyValueHeads, c.NumAttentionHeads},
			{c.HeadDim, MaxHeadDim}, {c.MaxPositionEmbeddings, MaxPositionEmbeddings}, {c.GuardInnerSize, MaxHiddenSize},
		} {
			if f.v < 1 || f.v > f.limit {
				t.Fatalf("accepted a size %d outside 1..%d: %+v", f.v, f.limit, c)
			}
		}
		if w := c.NumAttentionHeads * c.HeadDim; w > MaxProjectionWidth {
			t.Fatalf("accepted projection width %d", w)
		}
		if c.KVBytesPerPosition() > MaxKVBytesPerPosition || c.KVBytesPerPosition()*int64(c.MaxPositionEmbeddings) > MaxKVBytesPerStream {
			t.Fatalf("accepted a KV cache of %d bytes per position", c.KVBytesPerPosition())
		}
		l, err := c.Labels()
		if err != nil {
			t.Fatalf("Validate accepted labels that Labels refuses: %v", err)
		}
		for _, s := range [][]string{l.ResponseRisk, l.ResponseCategory, l.QueryRisk, l.QueryCategory} {
			if len(s) < 1 || len(s) > MaxLabels {
				t.Fatalf("accepted %d labels", len(s))
			}
		}
		for _, n := range []int{c.NumRiskLevel, c.NumCategory, c.NumQueryRiskLevel, c.NumQueryCategory} {
			if n < 0 || n > MaxLabels {
				t.Fatalf("accepted a num_* of %d", n)
			}
		}
	})
}

// TestLabelText: labels reach terminals, logs and pages, so a label with a
// control character (an escape sequence), a bidirectional-format one or
// bytes that are not UTF-8 is refused; any other text is a label.
func TestLabelText(t *testing.T) {
	for _, c := range []struct {
		label string
		ok    bool
	}{
		{"Violent", true}, {"Suicide & Self-Harm", true}, {"暴力", true}, {"Sexual Content or Sexual Acts", true},
		{"\x1b[2JPII", false}, {"PII\x07", false}, {"a\nb", false}, {"\u0085x", false},
		{"\u202eIIP", false}, {"x\u2066y", false}, {"\xff", false}, {"P\u200bII", false}, {"a\u2028b", false},
	} {
		if got := labelText(c.label); got != c.ok {
			t.Errorf("labelText(%q) = %v, want %v", c.label, got, c.ok)
		}
	}
}
