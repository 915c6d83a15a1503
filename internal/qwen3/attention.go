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
	att := ws.att[:T*qd]
	// Row t's query heads are q[t*qs:], its key and value heads k[t*ks:]
	// and v[t*ks:]; a stacked projection's output is used in place.
	var q, k, v []float32
	var qs, ks int
	if a.QKV != nil {
		w := qd + 2*kvd
		qkv := ws.qkv[:T*w]
		a.QKV.Forward(qkv, x, T)
		q, qs = qkv, w
		k, v, ks = qkv[qd:], qkv[qd+kvd:], w
	} else {
		q, qs = ws.q[:T*qd], qd
		k, v, ks = ws.k[:T*kvd], ws.v[:T*kvd], kvd
		a.Q.Forward(q, x, T)
		a.K.Forward(k, x, T)
		a.V.Forward(v, x, T)
	}

	kernels.ParallelFor(T, workersFor(T, qd+kvd), func(w, t int) {
		r := b.rows[t]
		cos, sin := b.rope.At(r.pos)
		for h := range a.Heads {
			qh := q[t*qs+h*hd : t*qs+(h+1)*hd]
			kernels.RMSNorm(qh, qh, a.QNorm.W, a.QNorm.Eps)
			kernels.RoPE(qh, cos, sin)
		}
		for h := range a.KVHeads {
			kh := k[t*ks+h*hd : t*ks+(h+1)*hd]
			kernels.RMSNorm(kh, kh, a.KNorm.W, a.KNorm.Eps)
			kernels.RoPE(kh, cos, sin)
		}
		if len(ws.scratch[w]) < hd { // the attention below grows it further
			ws.scratch[w] = make([]float32, hd)
		}
		for h := range a.KVHeads {
			r.cache.put(layer, h, r.pos, k[t*ks+h*hd:t*ks+(h+1)*hd], v[t*ks+h*hd:t*ks+(h+1)*hd], ws.scratch[w])
		}
	})

	scale := float32(1 / math.Sqrt(float64(hd)))
	group := a.Heads / a.KVHeads
	// One work item per (block, key/value head): a block is up to
	// blockRows rows of one sequence at consecutive positions (a prompt
	// chunk), so each cached key and value read serves the group's query
	// heads of every row in it; a streamed token is a block of one row.
	blockRows := max(1, attnBlockQueries/group)
	starts := attnBlocks(ws.blockStarts[:0], b.rows, blockRows)
	ws.blockStarts = starts
	nb := len(starts) - 1
	kernels.ParallelFor(nb*a.KVHeads, workersFor(nb*a.KVHeads, blockRows*2*group*hd*(b.maxPos+1)), func(w, i int) {
		bi, kh := i/a.KVHeads, i%a.KVHeads
		t0, rows := starts[bi], starts[bi+1]-starts[bi]
		r := b.rows[t0]
		lo := kh * group * hd
		if need := kernels.AttendBlockScratch(rows, group, r.pos+1, hd); len(ws.scratch[w]) < need {
			// Grow geometrically: a stream needs one more score per
			// head each token.
			ws.scratch[w] = make([]float32, max(need, 2*len(ws.scratch[w])))
		}
		r.cache.attend(layer, kh, att[t0*qd+lo:], qd, q[t0*qs+lo:], qs, rows, group, r.pos+1, scale, ws.scratch[w])
	})
	a.O.Forward(out, att, T)
}

// attnBlockQueries is the query heads one attention block holds: four
// tiles of the four-query kernels.
const attnBlockQueries = 16

// attnBlocks appends to starts the first row of each block of rows — at
// most max rows of one cache at consecutive positions — and then len(rows).
func attnBlocks(starts []int, rows []row, max int) []int {
	for t := 0; t < len(rows); {
		starts = append(starts, t)
		n := 1
		for n < max && t+n < len(rows) && rows[t+n].cache == rows[t].cache && rows[t+n].pos == rows[t].pos+n {
			n++
		}
		t += n
	}
	return append(starts, len(rows))
}
