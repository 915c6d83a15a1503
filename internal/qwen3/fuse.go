package qwen3

import (
	"runtime/debug"

	"github.com/streamguard/streamguard/internal/kernels"
)

// fusedSets are the projections of a layer that read the same input and
// run as one product when they are AWQ INT4 (fuseProjections), by name
// under the layer's prefix: the AWQ loader repacks each set into one
// allocation so that fusing them copies nothing. Their order is the order
// of fuseProjections' concatenations.
var fusedSets = [][]string{
	{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"},
	{"mlp.gate_proj", "mlp.up_proj"},
}

// fuseProjections stacks the int4 projections that read the same input —
// q, k and v; gate and up — into one matrix per layer, so a forward
// quantizes each input once and runs one parallel product instead of
// three or two. Outputs are unchanged bit for bit (the int4 kernels never
// mix outputs). The Q, K, V, Gate and Up fields keep working as views of
// the stacked storage, so memory does not grow. Float projections are left
// alone: they are read zero-copy from the checkpoint, and stacking them
// would copy the weights.
func fuseProjections(m *Model) error {
	for _, l := range m.Layers {
		copied := false // a concatenation copied the parts (not repacked together)
		if w, ok := fuseAWQ(l.Attn.Q, l.Attn.K, l.Attn.V); ok {
			all, views, err := kernels.ConcatInt4(w...)
			if err != nil {
				return err
			}
			l.Attn.QKV = &AWQLinear{W: all}
			copied = copied || views[0] != w[0]
			l.Attn.Q.(*AWQLinear).W, l.Attn.K.(*AWQLinear).W, l.Attn.V.(*AWQLinear).W = views[0], views[1], views[2]
		}
		if w, ok := fuseAWQ(l.MLP.Gate, l.MLP.Up); ok {
			all, views, err := kernels.ConcatInt4(w...)
			if err != nil {
				return err
			}
			l.MLP.GateUp = &AWQLinear{W: all}
			copied = copied || views[0] != w[0]
			l.MLP.Gate.(*AWQLinear).W, l.MLP.Up.(*AWQLinear).W = views[0], views[1]
		}
		if copied {
			// The parts' own storage is garbage now. Returning it layer by
			// layer keeps the load's peak at the model plus one layer
			// (without it, an 8B model peaked 2.2 GB above its size).
			debug.FreeOSMemory()
		}
	}
	return nil
}

// fuseAWQ returns the int4 matrices of ls when all are bias-free AWQ
// projections with the same input size and group, and outputs in whole
// blocks.
func fuseAWQ(ls ...Linear) ([]*kernels.Int4Matrix, bool) {
	var w []*kernels.Int4Matrix
	for _, l := range ls {
		a, ok := l.(*AWQLinear)
		if !ok || a.Bias != nil || a.W.N%16 != 0 {
			return nil, false
		}
		if len(w) > 0 && (a.W.K != w[0].K || a.W.Group != w[0].Group) {
			return nil, false
		}
		w = append(w, a.W)
	}
	return w, true
}

// SetInt4Coarse switches every int4 projection between the two activation
// modes of the int4 kernels (see kernels.Int4Matrix.Coarse): coarse int8
// rows only (faster, llama.cpp-like accuracy) or coarse plus residual rows
// (the default, within about 1e-4 of float activations). It reports
// whether the model has int4 projections. Call it before serving: a
// stream's results are consistent only within one mode.
func (m *Model) SetInt4Coarse(coarse bool) bool {
	found := false
	set := func(ls ...Linear) {
		for _, l := range ls {
			if a, ok := l.(*AWQLinear); ok {
				a.W.Coarse, found = coarse, true
			}
		}
	}
	for _, l := range m.Layers {
		set(l.Attn.Q, l.Attn.K, l.Attn.V, l.Attn.O, l.Attn.QKV, l.MLP.Gate, l.MLP.Up, l.MLP.GateUp, l.MLP.Down)
	}
	for _, h := range []*Head{m.Response, m.Query} {
		set(h.Pre, h.Risk, h.Category)
	}
	return found
}
