package qwen3

// Layer is one pre-norm Qwen3 decoder block:
// h += Attn(RMSNorm_in(h)); h += MLP(RMSNorm_post(h)) (layerStep).
type Layer struct {
	AttnNorm *RMSNorm // input_layernorm
	Attn     *Attention
	MLPNorm  *RMSNorm // post_attention_layernorm
	MLP      *MLP
}
