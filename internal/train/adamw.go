package train

import (
	"math"

	"github.com/streamguard/streamguard/internal/kernels"
)

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), the
// optimizer the guard heads are commonly fine-tuned with. Decay applies to
// the projection and classifier matrices, not to the RMSNorm weight, whose
// neutral value is 1, not 0.
type AdamW struct {
	LR, Beta1, Beta2, Eps, WeightDecay float64

	step int
	m, v *Head
}

// NewAdamW returns an optimizer for parameters shaped like h, with the
// usual β1 0.9, β2 0.999, ε 1e-8.
func NewAdamW(h *Head, lr, weightDecay float64) *AdamW {
	z := func() *Head { return NewHead(h.Hidden, h.Inner, h.Levels, h.Categories, h.Eps) }
	return &AdamW{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay, m: z(), v: z()}
}

// Step updates params from grad (the mean gradient of a mini-batch).
func (o *AdamW) Step(params, grad *Head) {
	o.step++
	c1 := 1 - math.Pow(o.Beta1, float64(o.step))
	c2 := 1 - math.Pow(o.Beta2, float64(o.step))
	b1, b2 := float32(o.Beta1), float32(o.Beta2)
	alpha := float32(o.LR / c1)
	inv2 := float32(1 / math.Sqrt(c2))
	eps := float32(o.Eps)
	ps, gs, ms, vs := params.tensors(), grad.tensors(), o.m.tensors(), o.v.tensors()
	for t := range ps {
		decay := float32(1 - o.LR*o.WeightDecay)
		if t == 1 { // the RMSNorm weight
			decay = 1
		}
		p, g, m, v := ps[t], gs[t], ms[t], vs[t]
		// Element-wise, so splitting the range cannot change the result.
		parallelChunks(len(p), func(lo, hi int) {
			for i := lo; i < hi; i++ {
				m[i] = b1*m[i] + (1-b1)*g[i]
				v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
				vh := float32(math.Sqrt(float64(v[i]))) * inv2
				p[i] = p[i]*decay - alpha*m[i]/(vh+eps)
			}
		})
	}
}

// parallelChunks runs fn over [0, n) split into contiguous chunks, one per
// kernel thread; small ranges stay on the calling goroutine.
func parallelChunks(n int, fn func(lo, hi int)) {
	const serial = 1 << 14
	p := kernels.Threads()
	if n < serial || p < 2 {
		fn(0, n)
		return
	}
	kernels.ParallelRange(n, 1, fn)
}
