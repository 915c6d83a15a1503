package qwen3

import "fmt"

// LayerRunner runs one decoder layer at a time, or its attention or MLP
// block alone, over whole sequences at positions 0..len−1, with keys and
// values for that one layer only. Calibration (the AWQ quantizer) walks a
// model layer by layer with it: a model-wide [Cache] per calibration
// sequence would hold every layer's keys at once.
//
// The sequences are packed in order into one [T][·] activation, T the sum
// of their lengths, exactly as [Model.Forward] packs a batch, so every
// call computes what a full forward computes for that layer. Any [Layer],
// [Attention] or [MLP] with the model's dimensions can be run, including
// ones whose Linears are wrapped or replaced (for example by quantized
// candidates). A runner is used by one goroutine at a time; the kernels
// inside still run in parallel.
type LayerRunner struct {
	m  *Model
	b  *batch
	ws *workspace
}

// NewLayerRunner prepares a runner for sequences of the given lengths.
// Close returns its scratch to the model.
func (m *Model) NewLayerRunner(lens []int) (*LayerRunner, error) {
	if m.uploadOnly {
		return nil, errUploadOnly
	}
	T := 0
	for i, n := range lens {
		if n <= 0 || n > m.MaxPositions {
			return nil, fmt.Errorf("sequence %d: length %d outside 1..%d (max_position_embeddings)", i, n, m.MaxPositions)
		}
		T += n
	}
	if T == 0 {
		return nil, fmt.Errorf("no sequences")
	}
	ws := m.getWorkspace(T)
	b := &batch{T: T, rows: ws.rows[:0], rope: m.RoPE, ws: ws}
	for _, n := range lens {
		c := m.newCache(1, m.kv)
		if err := c.Reserve(n); err != nil {
			m.pool.Put(ws)
			return nil, err
		}
		for p := range n {
			b.rows = append(b.rows, row{cache: c, pos: p})
		}
		b.maxPos = max(b.maxPos, n-1)
	}
	return &LayerRunner{m: m, b: b, ws: ws}, nil
}

// Tokens is T, the number of packed positions.
func (r *LayerRunner) Tokens() int { return r.b.T }

// Layer runs l over the residual stream h [T][hidden] in place.
func (r *LayerRunner) Layer(l *Layer, h []float32) { layerStep(r.ops(l, h, nil), 0) }

// Attention runs a on the normed input x [T][hidden] and writes its output
// (after o_proj) into out [T][hidden].
func (r *LayerRunner) Attention(a *Attention, x, out []float32) {
	attentionStep(r.ops(&Layer{Attn: a}, x, out), 0, ActOut, false)
}

// MLP runs mlp on x [T][hidden] and writes out [T][hidden].
func (r *LayerRunner) MLP(mlp *MLP, x, out []float32) {
	mlpStep(r.ops(&Layer{MLP: mlp}, x, out), 0, ActOut, false)
}

// ops binds the forward's operations to l as layer 0. For a whole layer,
// h is the residual stream; for a block (out set), h is the block's normed
// input and out its output.
func (r *LayerRunner) ops(l *Layer, h, out []float32) *cpuOps {
	n := r.b.T * r.m.hidden
	o := &cpuOps{m: r.m, b: r.b, layers: []*Layer{l}, h: h, x: r.ws.xn[:n], out: r.ws.o[:n]}
	if out != nil {
		o.h, o.x, o.out = nil, h, out
	}
	return o
}

// Close returns the runner's scratch; the runner must not be used after.
func (r *LayerRunner) Close() {
	if r.ws != nil {
		r.m.pool.Put(r.ws)
		r.ws, r.b = nil, nil
	}
}
