package qwen3

import "github.com/streamguard/streamguard/internal/kernels"

// MLP is Qwen3's SwiGLU feed-forward block: down(silu(gate(x))·up(x)).
type MLP struct {
	Gate, Up, Down Linear
	// GateUp, when set, computes gate and up as one product (outputs
	// stacked in that order); see fuseProjections.
	GateUp Linear
	Inter  int
}

// Forward reads x [T][hidden] and writes out [T][hidden].
func (m *MLP) Forward(b *batch, x, out []float32) {
	T, ws := b.T, b.ws
	I := m.Inter
	gate, up := ws.gate[:T*I], ws.up[:T*I]
	if m.GateUp != nil {
		gu := ws.gu[:2*T*I]
		m.GateUp.Forward(gu, x, T)
		for t := range T {
			kernels.SiLUMul(gate[t*I:(t+1)*I], gu[2*t*I:(2*t+1)*I], gu[(2*t+1)*I:(2*t+2)*I])
		}
	} else {
		m.Gate.Forward(gate, x, T)
		m.Up.Forward(up, x, T)
		kernels.SiLUMul(gate, gate, up)
	}
	m.Down.Forward(out, gate, T)
}
