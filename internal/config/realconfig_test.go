package config

import "testing"

// TestRealWorldConfigParses: a config.json as transformers and
// GPTQModel write them (nested objects, null, keys the struct lacks).
func TestRealWorldConfigParses(t *testing.T) {
	b := []byte(`{
  "_name_or_path": "Qwen/Qwen3Guard-Stream-8B",
  "architectures": ["Qwen3ForGuardModel"],
  "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_qwen3.Qwen3Config", "AutoModel": "modeling_qwen3_guard.Qwen3ForGuardModel"},
  "bos_token_id": 151643, "eos_token_id": [151645, 151643],
  "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
  "intermediate_size": 3072, "layer_types": ["full_attention", "full_attention"],
  "max_position_embeddings": 8192, "max_window_layers": 28, "model_type": "qwen3",
  "num_attention_heads": 16, "num_hidden_layers": 2, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-06, "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
  "rope_theta": 1000000, "sliding_window": null, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "dtype": "bfloat16", "transformers_version": "4.56.1",
  "use_cache": true, "use_sliding_window": false, "vocab_size": 151936,
  "guard_inner_size": 512, "num_risk_level": 3, "num_category": 8, "num_query_risk_level": 3, "num_query_category": 9,
  "response_risk_level_map": {"0": "Safe", "1": "Unsafe", "2": "Controversial"},
  "query_risk_level_map": {"0": "Safe", "1": "Unsafe", "2": "Controversial"},
  "quantization_config": {"bits": 4, "checkpoint_format": "gemm", "desc_act": false, "format": "gemm", "group_size": 128,
    "lm_head": false, "meta": {"quantizer": ["gptqmodel:4.0.0"], "uri": "https://github.com/modelcloud/gptqmodel", "damp_percent": 0.05, "v2": false},
    "pack_dtype": "int32", "quant_method": "awq", "sym": false, "version": "gemm", "zero_point": true, "modules_to_not_convert": null}
}`)
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
}
