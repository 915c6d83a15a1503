package gpu

import (
	"github.com/streamguard/streamguard/internal/qwen3"
)

// Fused projections: projections of the same input (a layer's q, k and v;
// its gate and up) uploaded as one, their rows stacked, so that one launch
// computes them all. On the tensor cores each output row's arithmetic does
// not depend on the other rows, so the fused product is bitwise the
// separate ones; it saves launches (two a layer for q/k/v, one for
// gate/up) and gives small products more blocks.

// fusedLinear uploads ls as one projection when they can be fused: all
// bf16 or all AWQ (same input size and group, no bias), each fitting the
// tensor-core tiles, on a model that uses them. ok is false (and nothing
// uploaded) otherwise.
func (m *Model) fusedLinear(ls ...qwen3.Linear) (g *linear, ok bool, err error) {
	if !m.mma || len(ls) < 2 {
		return nil, false, nil
	}
	switch first := ls[0].(type) {
	case *qwen3.BF16Linear:
		var w []uint16
		n := 0
		for _, l := range ls {
			b, isBF16 := l.(*qwen3.BF16Linear)
			if !isBF16 || b.In != first.In || !mmaFits(b.Out, b.In, 0) {
				return nil, false, nil
			}
			w = append(w, b.W...)
			n += b.Out
		}
		g = &linear{format: fmtBF16, n: n, k: first.In, mma: true}
		g.w, err = upload(m, bf16Frags(w, n, first.In))
	case *qwen3.AWQLinear:
		_, K := first.Dims()
		var ws [][]uint32
		var scs, negs [][]uint16
		var Ns []int
		group, n := 0, 0
		for _, l := range ls {
			a, isAWQ := l.(*qwen3.AWQLinear)
			if !isAWQ || a.Bias != nil {
				return nil, false, nil
			}
			N, k := a.Dims()
			qw, qz, sc, gr, err := a.Source()
			if err != nil {
				return nil, false, err
			}
			if k != K || (group != 0 && gr != group) || !mmaFits(N, k, gr) {
				return nil, false, nil
			}
			group = gr
			w, s, neg, err := awqFragsFromSource(qw, qz, sc, K, N, group)
			if err != nil {
				return nil, false, err
			}
			ws, scs, negs, Ns = append(ws, w), append(scs, s), append(negs, neg), append(Ns, N)
			n += N
		}
		g = &linear{format: fmtAWQ, n: n, k: K, group: group, mma: true}
		w, scales, neg := stackFrags(ws, scs, negs, Ns, K/group)
		err = m.uploadAWQFrags(g, w, scales, neg)
	default:
		return nil, false, nil
	}
	if err != nil {
		for _, b := range g.bufs() {
			b.Free()
		}
		return nil, false, err
	}
	m.projections.TensorCores += len(ls)
	return g, true, nil
}
