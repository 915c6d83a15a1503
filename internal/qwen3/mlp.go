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

// project computes gate and up of x [T][hidden] into the workspace: one
// stacked product when the layer has one, else two.
func (m *MLP) project(b *batch, x []float32) {
	T, ws, I := b.T, b.ws, m.Inter
	if m.GateUp != nil {
		m.GateUp.Forward(ws.gu[:2*T*I], x, T)
		return
	}
	m.Gate.Forward(ws.gate[:T*I], x, T)
	m.Up.Forward(ws.up[:T*I], x, T)
}

// siluMul writes silu(gate)·up of the projections project left in the
// workspace into dst [T][intermediate] (which may be the workspace's gate).
func (m *MLP) siluMul(b *batch, dst []float32) {
	T, ws, I := b.T, b.ws, m.Inter
	if m.GateUp != nil {
		gu := ws.gu[:2*T*I]
		for t := range T {
			kernels.SiLUMul(dst[t*I:(t+1)*I], gu[2*t*I:(2*t+1)*I], gu[(2*t+1)*I:(2*t+2)*I])
		}
		return
	}
	kernels.SiLUMul(dst[:T*I], ws.gate[:T*I], ws.up[:T*I])
}
