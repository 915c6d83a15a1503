package qwen3

import "github.com/streamguard/streamguard/internal/kernels"

// MLP is Qwen3's SwiGLU feed-forward block: down(silu(gate(x))·up(x)).
type MLP struct {
	Gate, Up, Down Linear
	Inter          int
}

// Forward reads x [T][hidden] and writes out [T][hidden].
func (m *MLP) Forward(b *batch, x, out []float32) {
	T, ws := b.T, b.ws
	gate, up := ws.gate[:T*m.Inter], ws.up[:T*m.Inter]
	m.Gate.Forward(gate, x, T)
	m.Up.Forward(up, x, T)
	kernels.SiLUMul(gate, gate, up)
	m.Down.Forward(out, gate, T)
}
