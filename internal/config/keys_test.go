package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestParseRefusesCaseVariantAndRepeatedKeys: encoding/json fills a field
// from a key that matches it only when case is ignored, and keeps the last
// of repeated keys, where transformers and jq read the exact key (and may
// keep the first). A config.json that means one thing to them and another
// to streamguard is refused, naming the key.
func TestParseRefusesCaseVariantAndRepeatedKeys(t *testing.T) {
	for _, tc := range []struct{ json, want string }{
		{`{"hidden_size": 1024,
		  "response_risk_level_map": {"0": "Safe", "1": "Unsafe", "2": "Controversial"},
		  "RESPONSE_RISK_LEVEL_MAP": {"0": "Safe", "1": "Safe", "2": "Safe"},
		  "Hidden_Size": 4096}`,
			`config.json: key "RESPONSE_RISK_LEVEL_MAP" matches the field "response_risk_level_map" only when case is ignored: other readers ignore it, so spell it exactly`},
		// A variant alone is refused too: transformers would not see it.
		{`{"Hidden_Size": 4096}`,
			`config.json: key "Hidden_Size" matches the field "hidden_size" only when case is ignored: other readers ignore it, so spell it exactly`},
		// The Kelvin sign folds to k: encoding/json's matching is Unicode's.
		{`{"\u212aey": 1, "tie_word_embeddings": true, "tie_word_embeddingſ": false}`,
			`config.json: key "tie_word_embeddingſ" matches the field "tie_word_embeddings" only when case is ignored: other readers ignore it, so spell it exactly`},
		{`{"hidden_size": 1024, "hidden_size": 4096}`,
			`config.json: key "hidden_size" appears twice: readers differ on which value counts`},
		{`{"response_risk_level_map": {"0": "Safe", "1": "Unsafe", "1": "Safe"}}`,
			`config.json: key "1" in "response_risk_level_map" appears twice: readers differ on which value counts`},
		{`{"quantization_config": {"quant_method": "awq", "Bits": 8}}`,
			`config.json: key "Bits" in "quantization_config" matches the field "bits" only when case is ignored: other readers ignore it, so spell it exactly`},
		// Unknown keys keep their treatment (Extra), but not repeated.
		{`{"auto_map": {"a": 1, "a": 2}}`,
			`config.json: key "a" in "auto_map" appears twice: readers differ on which value counts`},
	} {
		c, err := Parse([]byte(tc.json))
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%s) = %+v, %v\nwant error %s", tc.json, c, err, tc.want)
		}
	}
	// Exact keys, and unknown keys of any case, still parse.
	c, err := Parse([]byte(`{"hidden_size": 64, "auto_map": {"AutoModel": "x"}, "Auto_Map": 1}`))
	if err != nil || c.HiddenSize != 64 || len(c.Extra) != 2 {
		t.Fatalf("Parse = %+v, %v", c, err)
	}
}

// TestLoadRefusesCaseVariantQuantConfig: the old-style quant_config.json
// gets the same strict pass as config.json.
func TestLoadRefusesCaseVariantQuantConfig(t *testing.T) {
	c, _ := Preset("tiny")
	dir := t.TempDir()
	if err := c.Write(dir); err != nil {
		t.Fatal(err)
	}
	qpath := filepath.Join(dir, "quant_config.json")
	if err := os.WriteFile(qpath, []byte(`{"w_bit": 4, "q_group_size": 128, "W_BIT": 8}`), 0o644); err != nil {
		t.Fatal(err)
	}
	want := qpath + `: key "W_BIT" matches the field "w_bit" only when case is ignored: other readers ignore it, so spell it exactly`
	if d, err := Load(dir); err == nil || err.Error() != want {
		t.Fatalf("Load = %+v, %v\nwant error %s", d, err, want)
	}
}
