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
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/streamguard/streamguard/internal/jsonkeys"
)

// GuardArchitecture is the architectures[0] of a complete guard model.
const GuardArchitecture = "Qwen3ForGuardModel"

// MaxConfigBytes bounds config.json; real ones are a few kilobytes.
const MaxConfigBytes = 4 << 20

// Limits on the config.json fields that size memory. Validate refuses a
// config beyond any of them before anything is allocated from it, naming the
// field, its value and the limit.
//
// Every real Qwen3 and Qwen3Guard model is well inside them: Qwen3 0.6B to
// 235B-A22B have vocab_size 151936, hidden_size up to 8192 (5120 for 32B),
// intermediate_size up to 25600, at most 94 layers, 64 query heads, 16
// key/value heads, head_dim 128, and max_position_embeddings 32768 to
// 40960 (131072 or 262144 for the long-context releases). The limits leave
// several times that as headroom; their point is that a corrupt or hostile
// config cannot make a table, a workspace or the product of two fields
// enormous or overflow an int.
const (
	MaxVocabSize          = 1 << 20 // vocab_size
	MaxHiddenSize         = 1 << 15 // hidden_size, guard_inner_size
	MaxIntermediateSize   = 1 << 18 // intermediate_size
	MaxLayers             = 1024    // num_hidden_layers
	MaxAttentionHeads     = 1024    // num_attention_heads (and so num_key_value_heads)
	MaxHeadDim            = 1024    // head_dim
	MaxPositionEmbeddings = 1 << 20 // max_position_embeddings
	MaxLabels             = 1024    // classes of one guard head: num_* and each label map

	// MaxProjectionWidth bounds num_attention_heads × head_dim, the width
	// of the attention projections (Qwen3: at most 64 × 128 = 8192).
	MaxProjectionWidth = 1 << 17
	// MaxKVBytesPerPosition bounds the float32 keys and values that one
	// position of a stream costs over all layers, 2 × layers ×
	// num_key_value_heads × head_dim × 4 bytes (Qwen3-235B: 376 KiB).
	MaxKVBytesPerPosition = 16 << 20
	// MaxKVBytesPerStream bounds the KV cache of one stream at full length,
	// the cost of a position × max_position_embeddings (Qwen3-32B
	// at 131072 positions: 64 GiB; Qwen3-235B at 262144: 94 GiB). The cache
	// grows with the tokens actually fed, so this is no reservation, but a
	// model whose one stream could never fit in any machine is refused.
	MaxKVBytesPerStream = 1 << 38
)

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

	// explicitNums holds the num_* fields config.json spells out, so that
	// an explicit 0 (which omitempty cannot tell from absent) is refused.
	explicitNums map[string]bool
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
			if err := jsonkeys.Check(qb, &q); err != nil {
				return nil, fmt.Errorf("%s: %w", qpath, err)
			}
			if err := json.Unmarshal(qb, &q); err != nil {
				return nil, fmt.Errorf("%s: %w", qpath, err)
			}
			var qall map[string]json.RawMessage
			if err := json.Unmarshal(qb, &qall); err != nil {
				return nil, fmt.Errorf("%s: %w", qpath, err)
			}
			q.Extra = unknownKeys(qall, &q)
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
// checks the values. A key repeated in one object, or one that matches a
// field only when case is ignored ("Hidden_Size"), is refused: encoding/json
// would take the last one, or fill hidden_size from the variant, where
// transformers and jq read the exact key, so the file would mean different
// things to them and to streamguard.
func Parse(b []byte) (*Config, error) {
	var c Config
	if err := jsonkeys.Check(b, &c); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("config.json: %w", err)
	}
	c.Extra = unknownKeys(all, &c)
	for _, k := range numFields {
		if _, ok := all[k]; ok {
			if c.explicitNums == nil {
				c.explicitNums = map[string]bool{}
			}
			c.explicitNums[k] = true
		}
	}
	if q := c.QuantizationConfig; q != nil {
		var qall map[string]json.RawMessage
		if err := json.Unmarshal(all["quantization_config"], &qall); err != nil {
			return nil, fmt.Errorf("config.json: quantization_config: %w", err)
		}
		q.Extra = unknownKeys(qall, q)
		q.normalize()
	}
	return &c, nil
}

// unknownKeys returns the members of a JSON object (all) that no field of
// v (a pointer to a struct) takes by its json tag, so that a rewrite can
// keep them; nil when there are none.
func unknownKeys(all map[string]json.RawMessage, v any) map[string]json.RawMessage {
	known := map[string]bool{}
	t := reflect.TypeOf(v).Elem()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		known[name] = true
	}
	var extra map[string]json.RawMessage
	for k, v := range all {
		if !known[k] {
			if extra == nil {
				extra = map[string]json.RawMessage{}
			}
			extra[k] = v
		}
	}
	return extra
}

// numFields are the label counts of the four guard heads.
var numFields = []string{"num_risk_level", "num_category", "num_query_risk_level", "num_query_category"}

// MarshalJSON writes the known fields plus Extra, keys sorted.
func (c *Config) MarshalJSON() ([]byte, error) {
	type plain Config
	return withExtra((*plain)(c), c.Extra)
}

// withExtra marshals v (a struct without its MarshalJSON) and adds the
// members of extra that no field wrote.
func withExtra(v any, extra map[string]json.RawMessage) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(extra) == 0 {
		return b, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// MarshalJSON writes the known fields plus Extra, keys sorted.
func (q *Quantization) MarshalJSON() ([]byte, error) {
	type plain Quantization
	return withExtra((*plain)(q), q.Extra)
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
// head sizes and label maps. Every field that sizes memory must be positive
// and within its limit (MaxVocabSize and the others), and so must the
// products of fields that size projections and the KV cache. It returns
// every problem found, joined.
func (c *Config) Validate(guard bool) error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if c.ModelType != "" && c.ModelType != "qwen3" {
		bad("model_type is %q, want \"qwen3\"", c.ModelType)
	}
	errs = append(errs, c.sizeErrors()...)
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
		nums := map[string]int{"num_risk_level": c.NumRiskLevel, "num_category": c.NumCategory,
			"num_query_risk_level": c.NumQueryRiskLevel, "num_query_category": c.NumQueryCategory}
		for _, k := range numFields {
			if n := nums[k]; n < 0 || (n == 0 && c.explicitNums[k]) {
				bad("%s must be at least 1, got %d", k, n)
			}
		}
		if _, err := c.Labels(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sizeErrors checks the fields that size memory: each positive and within
// its limit, then (only when the factors are in range, so nothing
// overflows) the products that size projections and the KV cache.
func (c *Config) sizeErrors() []error {
	var errs []error
	fields := []struct {
		name       string
		val, limit int
	}{
		{"vocab_size", c.VocabSize, MaxVocabSize},
		{"hidden_size", c.HiddenSize, MaxHiddenSize},
		{"intermediate_size", c.IntermediateSize, MaxIntermediateSize},
		{"num_hidden_layers", c.NumHiddenLayers, MaxLayers},
		{"num_attention_heads", c.NumAttentionHeads, MaxAttentionHeads},
		{"num_key_value_heads", c.NumKeyValueHeads, MaxAttentionHeads},
		{"head_dim", c.HeadDim, MaxHeadDim},
		{"max_position_embeddings", c.MaxPositionEmbeddings, MaxPositionEmbeddings},
	}
	inRange := true
	for _, f := range fields {
		switch {
		case f.val <= 0:
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", f.name, f.val))
			inRange = false
		case f.val > f.limit:
			errs = append(errs, fmt.Errorf("%s %d exceeds the limit %d", f.name, f.val, f.limit))
			inRange = false
		}
	}
	if c.GuardInnerSize > MaxHiddenSize {
		errs = append(errs, fmt.Errorf("guard_inner_size %d exceeds the limit %d", c.GuardInnerSize, MaxHiddenSize))
	}
	for _, f := range []struct {
		name string
		n    int
	}{{"num_risk_level", c.NumRiskLevel}, {"num_category", c.NumCategory},
		{"num_query_risk_level", c.NumQueryRiskLevel}, {"num_query_category", c.NumQueryCategory}} {
		if f.n > MaxLabels {
			errs = append(errs, fmt.Errorf("%s %d exceeds the limit %d", f.name, f.n, MaxLabels))
		}
	}
	if !inRange {
		return errs
	}
	if w := int64(c.NumAttentionHeads) * int64(c.HeadDim); w > MaxProjectionWidth {
		errs = append(errs, fmt.Errorf("num_attention_heads × head_dim = %d × %d = %d exceeds the limit %d",
			c.NumAttentionHeads, c.HeadDim, w, MaxProjectionWidth))
	}
	perPos := c.KVBytesPerPosition()
	if perPos > MaxKVBytesPerPosition {
		errs = append(errs, fmt.Errorf("the KV cache costs %d bytes per position (2 × num_hidden_layers %d × num_key_value_heads %d × head_dim %d × 4), more than the limit %d",
			perPos, c.NumHiddenLayers, c.NumKeyValueHeads, c.HeadDim, MaxKVBytesPerPosition))
	} else if full := perPos * int64(c.MaxPositionEmbeddings); full > MaxKVBytesPerStream {
		errs = append(errs, fmt.Errorf("max_position_embeddings %d: one full-length stream would need %d bytes of KV cache (%d per position), more than the limit %d",
			c.MaxPositionEmbeddings, full, perPos, int64(MaxKVBytesPerStream)))
	}
	return errs
}

// KVBytesPerPosition is the float32 KV-cache memory one position of a
// stream costs: 2 × num_hidden_layers × num_key_value_heads × head_dim × 4.
// It is meaningful only for a config whose sizes Validate accepts.
func (c *Config) KVBytesPerPosition() int64 {
	return 2 * int64(c.NumHiddenLayers) * int64(c.NumKeyValueHeads) * int64(c.HeadDim) * 4
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
	if len(m) > MaxLabels {
		return nil, fmt.Errorf("%d labels exceed the limit %d", len(m), MaxLabels)
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
		if !labelText(v) {
			// Labels reach terminals, logs and pages: an escape
			// sequence in one would act there.
			return nil, fmt.Errorf("label %s %q holds a control, format (bidirectional, zero-width) or line-separator character, or is not UTF-8", k, v)
		}
		s[i] = v
	}
	return s, nil
}

// labelText reports whether a label is UTF-8 text with no control
// character (C0, C1: terminal escapes), no format character (bidirectional
// controls, which reorder what is shown around them; zero-width ones,
// which hide), and no line or paragraph separator.
func labelText(v string) bool {
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp) {
			return false
		}
	}
	return true
}

// SliceToMap is the inverse of the label-map decoding, for writing configs.
func SliceToMap(s []string) map[string]string {
	m := make(map[string]string, len(s))
	for i, v := range s {
		m[strconv.Itoa(i)] = v
	}
	return m
}

// QueryHeads returns the number of query heads sharing one KV head.
func (c *Config) GroupSize() int { return c.NumAttentionHeads / c.NumKeyValueHeads }
