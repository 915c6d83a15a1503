package qwen3

import "github.com/streamguard/streamguard/internal/safetensors"

// sizer is implemented by every Linear of this package: the bytes of
// weights one forward reads.
type sizer interface{ WeightBytes() int64 }

// WeightBytes implements sizer.
func (l *F32Linear) WeightBytes() int64 { return 4 * int64(len(l.W)) }

// WeightBytes implements sizer.
func (l *BF16Linear) WeightBytes() int64 { return 2 * int64(len(l.W)) }

// WeightBytes implements sizer.
func (l *F16Linear) WeightBytes() int64 { return 2 * int64(len(l.W)) }

// WeightBytes implements sizer: the repacked codes, scales and zero points.
func (l *AWQLinear) WeightBytes() int64 { return int64(l.W.Bytes()) + 4*int64(len(l.Bias)) }

// DecodeWeightBytes is the weight memory one single-token step reads: every
// projection and head matrix once (stacked projections counted once), the
// norm vectors, and one embedding row. Divided by a step's time it gives
// the bandwidth decoding draws, to compare with the machine's.
func (m *Model) DecodeWeightBytes() int64 {
	var n int64
	add := func(ls ...Linear) {
		for _, l := range ls {
			if s, ok := l.(sizer); ok {
				n += s.WeightBytes()
			}
		}
	}
	norm := func(ns ...*RMSNorm) {
		for _, x := range ns {
			n += 4 * int64(len(x.W))
		}
	}
	for _, l := range m.Layers {
		add(l.Attn.Q, l.Attn.K, l.Attn.V, l.Attn.O, l.MLP.Gate, l.MLP.Up, l.MLP.Down)
		norm(l.AttnNorm, l.MLPNorm, l.Attn.QNorm, l.Attn.KNorm)
	}
	for _, h := range []*Head{m.Response, m.Query} {
		add(h.Pre, h.Risk, h.Category)
		norm(h.Norm)
	}
	norm(m.Norm)
	return n + m.embedRowBytes()
}

// embedRowBytes is the size of one embedding row as stored.
func (m *Model) embedRowBytes() int64 {
	if e, ok := m.Embed.(*DenseEmbedding); ok {
		if e.dtype == safetensors.F32 {
			return 4 * int64(e.hidden)
		}
		return 2 * int64(e.hidden)
	}
	return 2 * int64(m.hidden)
}
