package qwen3

// cpuOps is the CPU engine's implementation of [Ops]: one batch's
// activations in its pooled workspace, the model's parts for the weights.
type cpuOps struct {
	m      *Model
	b      *batch
	layers []*Layer     // by layer index: the model's, or a LayerRunner's one
	h, x   []float32    // ActHidden, ActNormed
	out    []float32    // ActOut
	logits [4][]float32 // ActLogits…
}

var _ Ops = (*cpuOps)(nil)

// newCPUOps binds the step's activations to b's workspace: the residual
// stream h, and the logits after the heads.
func (m *Model) newCPUOps(b *batch, h []float32) *cpuOps {
	T, ws := b.T, b.ws
	o := &cpuOps{m: m, b: b, layers: m.Layers, h: h, x: ws.xn[:len(h)], out: ws.o[:len(h)]}
	off := 0
	for i, w := range LogitTensors {
		n, _ := o.linear(w).Dims()
		o.logits[i] = ws.out[off : off+T*n]
		off += T * n
	}
	return o
}

func (o *cpuOps) buf(a Act) []float32 {
	T, ws := o.b.T, o.b.ws
	switch {
	case a == ActHidden:
		return o.h
	case a == ActNormed:
		return o.x
	case a == ActAttn:
		return ws.att[:T*o.m.qDim]
	case a == ActMLP:
		return ws.gate[:T*o.m.inter]
	case a == ActOut:
		return o.out
	case a == ActPre:
		return ws.pre[:T*o.m.guardInner]
	case a >= ActLogits && a < ActLogits+4:
		return o.logits[a-ActLogits]
	}
	panic("qwen3: no CPU buffer for activation")
}

func (o *cpuOps) head(p int) *Head {
	if p == HeadQuery {
		return o.m.Query
	}
	return o.m.Response
}

// linear is the projection w names; QKVProj and GateUpProj, which may be
// several, are handled by the attention and the MLP.
func (o *cpuOps) linear(w Weight) Linear {
	switch w.Tensor {
	case OProj:
		return o.layers[w.Layer].Attn.O
	case DownProj:
		return o.layers[w.Layer].MLP.Down
	case HeadPre:
		return o.head(w.Layer).Pre
	case HeadRisk:
		return o.head(w.Layer).Risk
	case HeadCategory:
		return o.head(w.Layer).Category
	}
	panic("qwen3: no single projection for tensor")
}

func (o *cpuOps) norm(w Weight) *RMSNorm {
	switch w.Tensor {
	case AttnNorm:
		return o.layers[w.Layer].AttnNorm
	case MLPNorm:
		return o.layers[w.Layer].MLPNorm
	case FinalNorm:
		return o.m.Norm
	case HeadNorm:
		return o.head(w.Layer).Norm
	}
	panic("qwen3: not a norm tensor")
}

// Embed implements [Ops]: each row's embedding, widened to float32.
func (o *cpuOps) Embed(dst Act) {
	h, H := o.buf(dst), o.m.hidden
	for t, id := range o.b.ids {
		o.m.Embed.Lookup(h[t*H:(t+1)*H], id)
	}
}

// Norm implements [Ops].
func (o *cpuOps) Norm(dst, x Act, w Weight) { o.norm(w).Forward(o.buf(dst), o.buf(x)) }

// Project implements [Ops]. An accumulated product goes through the
// workspace's o and one add per element, the rounding of h + l(x).
func (o *cpuOps) Project(dst, x Act, w Weight, accumulate bool) {
	T, xs := o.b.T, o.buf(x)
	switch w.Tensor {
	case QKVProj:
		o.layers[w.Layer].Attn.project(o.b, xs)
		return
	case GateUpProj:
		o.layers[w.Layer].MLP.project(o.b, xs)
		return
	}
	l, y := o.linear(w), o.buf(dst)
	if !accumulate {
		l.Forward(y, xs, T)
		return
	}
	tmp := o.b.ws.o[:len(y)]
	l.Forward(tmp, xs, T)
	addInPlace(y, tmp)
}

// Attend implements [Ops].
func (o *cpuOps) Attend(layer int, dst, _ Act) {
	o.layers[layer].Attn.attend(o.b, layer, o.buf(dst))
}

// SiLUMul implements [Ops].
func (o *cpuOps) SiLUMul(layer int, dst, _ Act) { o.layers[layer].MLP.siluMul(o.b, o.buf(dst)) }

func addInPlace(dst, x []float32) {
	x = x[:len(dst)]
	for i := range dst {
		dst[i] += x[i]
	}
}
