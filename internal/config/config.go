// Package config reads and checks the config.json of a Qwen3Guard-Stream model
// folder: the Qwen3 backbone fields, the guard head sizes and label maps, and
// an optional AWQ quantization_config.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
)

// GuardArchitecture is the architectures[0] of a complete guard model.
const GuardArchitecture = "Qwen3ForGuardModel"

// MaxConfigBytes bounds config.json; real ones are a few kilobytes.
const MaxConfigBytes = 4 << 20

// Config mirrors the config.json fields streamguard uses. Unknown fields are
// kept in Extra so a rewrite (quantize, graft, train-heads) loses nothing.
type Config struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	VocabSize             int      `json:"vocab_size"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	RopeScaling           any      `json:"rope_scaling"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	AttentionBias         bool     `json:"attention_bias"`
	UseSlidingWindow      bool     `json:"use_sliding_window"`
	TorchDtype            string   `json:"torch_dtype,omitempty"`
	BosTokenID            *int     `json:"bos_token_id,omitempty"`
	EosTokenID            any      `json:"eos_token_id,omitempty"`

	// Guard heads (absent in a plain Qwen3ForCausalLM config).
	GuardInnerSize       int                        `json:"guard_inner_size,omitempty"`
	NumRiskLevel         int                        `json:"num_risk_level,omitempty"`
	NumCategory          int                        `json:"num_category,omitempty"`
	NumQueryRiskLevel    int                        `json:"num_query_risk_level,omitempty"`
	NumQueryCategory     int                        `json:"num_query_category,omitempty"`
	ResponseRiskLevelMap map[string]string          `json:"response_risk_level_map,omitempty"`
	ResponseCategoryMap  map[string]string          `json:"response_category_map,omitempty"`
	QueryRiskLevelMap    map[string]string          `json:"query_risk_level_map,omitempty"`
	QueryCategoryMap     map[string]string          `json:"query_category_map,omitempty"`
	QuantizationConfig   *Quantization              `json:"quantization_config,omitempty"`
	Extra                map[string]json.RawMessage `json:"-"`
}

// Quantization is an AWQ quantization_config (AutoAWQ or GPTQModel spelling),
// or the contents of an old-style quant_config.json.
type Quantization struct {
	QuantMethod         string   `json:"quant_method,omitempty"`
	Bits                int      `json:"bits,omitempty"`
	GroupSize           int      `json:"group_size,omitempty"`
	ZeroPoint           *bool    `json:"zero_point,omitempty"`
	Version             string   `json:"version,omitempty"`
	ModulesToNotConvert []string `json:"modules_to_not_convert,omitempty"`
	// Old quant_config.json spellings; Normalize folds them into the above.
	WBit             int                        `json:"w_bit,omitempty"`
	QGroupSize       int                        `json:"q_group_size,omitempty"`
	Format           string                     `json:"format,omitempty"`
	CheckpointFormat string                     `json:"checkpoint_format,omitempty"`
	Extra            map[string]json.RawMessage `json:"-"`
}

// Labels are the four label maps as index-ordered slices.
type Labels struct {
	ResponseRisk     []string
	ResponseCategory []string
	QueryRisk        []string
	QueryCategory    []string
}

// Load reads dir/config.json, and dir/quant_config.json when config.json has
// no quantization_config.
func Load(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if c.QuantizationConfig == nil {
		qpath := filepath.Join(dir, "quant_config.json")
		if qb, err := readBounded(qpath); err == nil {
			var q Quantization
			if err := json.Unmarshal(qb, &q); err != nil {
				return nil, fmt.Errorf("%s: %w", qpath, err)
			}
			c.QuantizationConfig = &q
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	if q := c.QuantizationConfig; q != nil {
		q.normalize()
	}
	return c, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > MaxConfigBytes {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed for a config file", path, st.Size(), MaxConfigBytes)
	}
	b := make([]byte, st.Size())
	if _, err := f.ReadAt(b, 0); err != nil && st.Size() > 0 {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// Parse decodes config.json bytes. It checks syntax and types only; Validate
// checks the values.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	c.Extra = map[string]json.RawMessage{}
	for k, v := range all {
		if !knownField[k] {
			c.Extra[k] = v
		}
	}
	if c.QuantizationConfig != nil {
		c.QuantizationConfig.normalize()
	}
	return &c, nil
}

var knownField = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range []string{"architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size",
		"num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
		"rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "attention_bias", "use_sliding_window",
		"torch_dtype", "bos_token_id", "eos_token_id", "guard_inner_size", "num_risk_level", "num_category",
		"num_query_risk_level", "num_query_category", "response_risk_level_map", "response_category_map",
		"query_risk_level_map", "query_category_map", "quantization_config"} {
		m[k] = true
	}
	return m
}()

// MarshalJSON writes the known fields plus Extra, keys sorted.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	b, err := json.Marshal((*plain)(c))
	if err != nil {
		return nil, err
	}
	if len(c.Extra) == 0 {
		return b, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.Extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// Write writes the config as indented JSON to dir/config.json.
func (c *Config) Write(dir string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644)
}

func (q *Quantization) normalize() {
	if q.Bits == 0 {
		q.Bits = q.WBit
	}
	if q.GroupSize == 0 {
		q.GroupSize = q.QGroupSize
	}
	if q.QuantMethod == "" && (q.WBit != 0 || q.QGroupSize != 0) {
		q.QuantMethod = "awq"
	}
	q.WBit, q.QGroupSize = 0, 0
}

// IsAWQ reports whether the config declares AWQ GEMM quantization.
func (c *Config) IsAWQ() bool {
	return c.QuantizationConfig != nil && c.QuantizationConfig.QuantMethod == "awq"
}

// IsGuard reports whether the config declares the Qwen3ForGuardModel architecture.
func (c *Config) IsGuard() bool {
	return len(c.Architectures) > 0 && c.Architectures[0] == GuardArchitecture
}

// Validate checks the backbone fields (always) and, when guard is true, the
// head sizes and label maps. It returns every problem found, joined.
func (c *Config) Validate(guard bool) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.ModelType != "" && c.ModelType != "qwen3" {
		bad("model_type is %q, want \"qwen3\"", c.ModelType)
	}
	pos := map[string]int{"vocab_size": c.VocabSize, "hidden_size": c.HiddenSize, "intermediate_size": c.IntermediateSize,
		"num_hidden_layers": c.NumHiddenLayers, "num_attention_heads": c.NumAttentionHeads,
		"num_key_value_heads": c.NumKeyValueHeads, "head_dim": c.HeadDim, "max_position_embeddings": c.MaxPositionEmbeddings}
	for _, k := range sortedKeys(pos) {
		if pos[k] <= 0 {
			bad("%s must be positive, got %d", k, pos[k])
		}
	}
	if c.NumKeyValueHeads > 0 && c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
		bad("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	}
	if c.HeadDim%2 != 0 {
		bad("head_dim %d must be even for RoPE", c.HeadDim)
	}
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		bad("rms_norm_eps %g out of range (0, 1)", c.RMSNormEps)
	}
	if !(c.RopeTheta > 1) {
		bad("rope_theta %g must be greater than 1", c.RopeTheta)
	}
	if c.RopeScaling != nil {
		bad("rope_scaling is set (%v); Qwen3Guard-Stream uses none and streamguard does not implement it", c.RopeScaling)
	}
	if c.AttentionBias {
		bad("attention_bias is true; Qwen3 has no attention biases")
	}
	if c.UseSlidingWindow {
		bad("use_sliding_window is true; Qwen3Guard-Stream uses full attention")
	}
	if q := c.QuantizationConfig; q != nil {
		if err := q.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if guard {
		if c.GuardInnerSize <= 0 {
			bad("guard_inner_size must be positive, got %d", c.GuardInnerSize)
		}
		if _, err := c.Labels(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Validate checks an AWQ quantization_config.
func (q *Quantization) Validate() error {
	if q.QuantMethod != "awq" {
		return fmt.Errorf("quantization_config.quant_method is %q; streamguard reads only \"awq\"", q.QuantMethod)
	}
	if q.Bits != 4 {
		return fmt.Errorf("quantization_config.bits is %d; only 4-bit AWQ is supported", q.Bits)
	}
	if q.GroupSize <= 0 || q.GroupSize%8 != 0 {
		return fmt.Errorf("quantization_config.group_size %d must be a positive multiple of 8", q.GroupSize)
	}
	switch v := lower(q.Version); v {
	case "", "gemm":
	default:
		return fmt.Errorf("quantization_config.version %q: only the GEMM layout is supported", q.Version)
	}
	return nil
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 32
		}
	}
	return string(b)
}

// Labels returns the four label maps as slices, checking that keys are
// exactly "0".."n-1" and that the counts agree with the num_* fields when set.
func (c *Config) Labels() (*Labels, error) {
	var errs []error
	conv := func(field string, m map[string]string, n int) []string {
		s, err := mapToSlice(m)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
			return nil
		}
		if n != 0 && n != len(s) {
			errs = append(errs, fmt.Errorf("%s has %d labels but its num_* field says %d", field, len(s), n))
		}
		return s
	}
	l := &Labels{
		ResponseRisk:     conv("response_risk_level_map", c.ResponseRiskLevelMap, c.NumRiskLevel),
		ResponseCategory: conv("response_category_map", c.ResponseCategoryMap, c.NumCategory),
		QueryRisk:        conv("query_risk_level_map", c.QueryRiskLevelMap, c.NumQueryRiskLevel),
		QueryCategory:    conv("query_category_map", c.QueryCategoryMap, c.NumQueryCategory),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, risk := range [][]string{l.ResponseRisk, l.QueryRisk} {
		if len(risk) == 0 || risk[0] != "Safe" {
			return nil, fmt.Errorf("risk level maps must name index 0 \"Safe\" (streaming rules depend on it), got %q", risk)
		}
	}
	return l, nil
}

func mapToSlice(m map[string]string) ([]string, error) {
	if len(m) == 0 {
		return nil, errors.New("missing or empty")
	}
	s := make([]string, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(m) || strconv.Itoa(i) != k {
			return nil, fmt.Errorf("key %q is not an index in 0..%d", k, len(m)-1)
		}
		if v == "" {
			return nil, fmt.Errorf("label %s is empty", k)
		}
		s[i] = v
	}
	return s, nil
}

// SliceToMap is the inverse of the label-map decoding, for writing configs.
func SliceToMap(s []string) map[string]string {
	m := make(map[string]string, len(s))
	for i, v := range s {
		m[strconv.Itoa(i)] = v
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// QueryHeads returns the number of query heads sharing one KV head.
func (c *Config) GroupSize() int { return c.NumAttentionHeads / c.NumKeyValueHeads }
