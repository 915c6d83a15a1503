package qwen3

// Layer is one pre-norm Qwen3 decoder block:
// h += Attn(RMSNorm_in(h)); h += MLP(RMSNorm_post(h)).
type Layer struct {
	AttnNorm *RMSNorm // input_layernorm
	Attn     *Attention
	MLPNorm  *RMSNorm // post_attention_layernorm
	MLP      *MLP
}

// Forward updates the residual stream h [T][hidden] of batch b in place.
func (l *Layer) Forward(b *batch, index int, h []float32) {
	n := len(h)
	xn, o := b.ws.xn[:n], b.ws.o[:n]
	l.AttnNorm.Forward(xn, h)
	l.Attn.Forward(b, index, xn, o)
	addInPlace(h, o)
	l.MLPNorm.Forward(xn, h)
	l.MLP.Forward(b, xn, o)
	addInPlace(h, o)
}

func addInPlace(dst, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += x[i]
	}
}
