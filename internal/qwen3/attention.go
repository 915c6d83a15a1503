package qwen3

import (
	"math"

	"github.com/streamguard/streamguard/internal/kernels"
)

// Attention is Qwen3 self-attention: q/k/v projections, a per-head RMSNorm
// of q and k before NeoX RoPE, grouped-query causal attention over the
// sequence's cache, and the output projection.
type Attention struct {
	Q, K, V, O Linear
	// QKV, when set, computes q, k and v as one product (their outputs
	// stacked in that order); see fuseProjections.
	QKV            Linear
	QNorm, KNorm   *RMSNorm // over one head (head_dim)
	Heads, KVHeads int
	HeadDim        int
}

// Forward reads the normed input x [T][hidden] of batch b and writes the
// attention output (after o_proj) into out [T][hidden]. It also stores the
// new keys and values in each row's cache at the row's position, so rows
// later in the same sequence attend to rows earlier in the batch.
func (a *Attention) Forward(b *batch, layer int, x, out []float32) {
	T, ws := b.T, b.ws
	hd := a.HeadDim
	qd, kvd := a.Heads*hd, a.KVHeads*hd
	q, k, v, att := ws.q[:T*qd], ws.k[:T*kvd], ws.v[:T*kvd], ws.att[:T*qd]
	if a.QKV != nil {
		w := qd + 2*kvd
		qkv := ws.qkv[:T*w]
		a.QKV.Forward(qkv, x, T)
		for t := range T {
			row := qkv[t*w : (t+1)*w]
			copy(q[t*qd:(t+1)*qd], row[:qd])
			copy(k[t*kvd:(t+1)*kvd], row[qd:qd+kvd])
			copy(v[t*kvd:(t+1)*kvd], row[qd+kvd:])
		}
	} else {
		a.Q.Forward(q, x, T)
		a.K.Forward(k, x, T)
		a.V.Forward(v, x, T)
	}

	parallelFor(T, workersFor(T, qd+kvd), func(_, t int) {
		r := b.rows[t]
		cos, sin := b.rope.At(r.pos)
		for h := range a.Heads {
			qh := q[t*qd+h*hd : t*qd+(h+1)*hd]
			kernels.RMSNorm(qh, qh, a.QNorm.W, a.QNorm.Eps)
			kernels.RoPE(qh, cos, sin)
		}
		for h := range a.KVHeads {
			kh := k[t*kvd+h*hd : t*kvd+(h+1)*hd]
			kernels.RMSNorm(kh, kh, a.KNorm.W, a.KNorm.Eps)
			kernels.RoPE(kh, cos, sin)
		}
		for h := range a.KVHeads {
			kc, vc := r.cache.head(layer, h)
			copy(kc[r.pos*hd:(r.pos+1)*hd], k[t*kvd+h*hd:t*kvd+(h+1)*hd])
			copy(vc[r.pos*hd:(r.pos+1)*hd], v[t*kvd+h*hd:t*kvd+(h+1)*hd])
		}
	})

	scale := float32(1 / math.Sqrt(float64(hd)))
	group := a.Heads / a.KVHeads
	// One work item per (row, key/value head): the group's query heads
	// share each pass over the cached keys and values.
	parallelFor(T*a.KVHeads, workersFor(T*a.KVHeads, 2*group*hd*(b.maxPos+1)), func(w, i int) {
		t, kh := i/a.KVHeads, i%a.KVHeads
		r := b.rows[t]
		kc, vc := r.cache.head(layer, kh)
		lo, hi := t*qd+kh*group*hd, t*qd+(kh+1)*group*hd
		kernels.AttendGroup(att[lo:hi], q[lo:hi], group, kc, vc, r.pos+1, hd, hd, scale, ws.scratch[w])
	})
	a.O.Forward(out, att, T)
}
