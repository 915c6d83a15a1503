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

// project computes q, k and v of the normed input x [T][hidden] of batch
// b into the workspace: one stacked product when the layer has one, else
// three.
func (a *Attention) project(b *batch, x []float32) {
	T, ws := b.T, b.ws
	qd, kvd := a.Heads*a.HeadDim, a.KVHeads*a.HeadDim
	if a.QKV != nil {
		a.QKV.Forward(ws.qkv[:T*(qd+2*kvd)], x, T)
		return
	}
	a.Q.Forward(ws.q[:T*qd], x, T)
	a.K.Forward(ws.k[:T*kvd], x, T)
	a.V.Forward(ws.v[:T*kvd], x, T)
}

// attend reads the q, k and v that project left in the workspace and writes
// the attention output (before o_proj) into att [T][heads·head_dim]. It
// also stores the new keys and values in each row's cache at the row's
// position, so rows later in the same sequence attend to rows earlier in
// the batch.
func (a *Attention) attend(b *batch, layer int, att []float32) {
	T, ws := b.T, b.ws
	hd := a.HeadDim
	qd, kvd := a.Heads*hd, a.KVHeads*hd
	// Row t's query heads are q[t*qs:], its key and value heads k[t*ks:]
	// and v[t*ks:]; a stacked projection's output is used in place.
	var q, k, v []float32
	var qs, ks int
	if a.QKV != nil {
		w := qd + 2*kvd
		qkv := ws.qkv[:T*w]
		q, qs = qkv, w
		k, v, ks = qkv[qd:], qkv[qd+kvd:], w
	} else {
		q, qs = ws.q[:T*qd], qd
		k, v, ks = ws.k[:T*kvd], ws.v[:T*kvd], kvd
	}

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
	it := &ws.attn
	*it = attnItems{rowHeads: rowHeads{a: a, b: b, layer: layer, q: q, k: k, v: v, qs: qs, ks: ks}, starts: starts, att: att, group: group, scale: scale}
	defer func() { *it = attnItems{} }() // the pooled workspace keeps no caller's memory
	it.fused = ownBlocks(b.rows, starts) && !separatePrepare
	// Key/value heads per item: a streamed token's go attnItemHeads to an
	// item where its cache reads them in turns with the next one
	// prefetched (Cache.attendHeads: bfloat16 and int8), so that a core
	// reads two streams at once; prompt blocks keep one head an item.
	heads := 1
	if it.fused && nb == T && a.KVHeads%attnItemHeads == 0 && b.rows[0].cache.attendsHeads() {
		heads = attnItemHeads
	}
	workers := workersFor(nb*a.KVHeads, blockRows*2*group*hd*(b.maxPos+1))
	if !it.fused {
		// A sequence split over several blocks: every row's keys are
		// stored before any block attends.
		kernels.ParallelFor(T, workersFor(T, qd+kvd), func(w, t int) {
			if len(ws.scratch[w]) < hd { // the attention below grows it further
				ws.scratch[w] = make([]float32, hd)
			}
			it.prepare(t, 0, a.Heads, 0, a.KVHeads, ws.scratch[w])
		})
	}
	it.heads, it.items = heads, a.KVHeads/heads
	kernels.ParallelItems(nb*it.items, min(workers, nb*it.items), it)
}

// attnItems is one layer's attention work: item i is block i/items and
// its key/value heads from (i%items)·heads. It lives in the batch's
// workspace, so handing it to the goroutines allocates nothing.
type attnItems struct {
	rowHeads
	starts []int
	att    []float32 // output rows [T][heads·head_dim]
	heads  int       // key/value heads per item
	items  int       // items per block
	group  int       // query heads per key/value head
	scale  float32
}

// RunItem implements kernels.ItemRunner.
func (it *attnItems) RunItem(w, i int) {
	a, b, ws := it.a, it.b, it.b.ws
	hd, qd, group, heads := a.HeadDim, a.Heads*a.HeadDim, it.group, it.heads
	bi, kh0 := i/it.items, i%it.items*heads
	t0, rows := it.starts[bi], it.starts[bi+1]-it.starts[bi]
	r := b.rows[t0]
	lo := kh0 * group * hd
	need := kernels.AttendBlockScratch(rows, group, r.pos+1, hd)
	if heads > 1 {
		need = kernels.AttendHeadsScratch(heads, group, r.pos+1, hd)
	}
	if need = max(hd, need); len(ws.scratch[w]) < need {
		// Grow geometrically: a stream needs one more score per
		// head each token.
		ws.scratch[w] = make([]float32, max(need, 2*len(ws.scratch[w])))
	}
	if it.fused {
		// This block is its sequence's only one: its rows' keys
		// and values for heads kh0.. are stored here, before the
		// block reads them, and no other item reads them.
		for t := t0; t < t0+rows; t++ {
			it.prepare(t, kh0*group, (kh0+heads)*group, kh0, kh0+heads, ws.scratch[w])
		}
	}
	if heads > 1 {
		r.cache.attendHeads(it.layer, kh0, heads, it.att[t0*qd+lo:], it.q[t0*it.qs+lo:], group, r.pos+1, it.scale, ws.scratch[w])
		return
	}
	r.cache.attend(it.layer, kh0, it.att[t0*qd+lo:], qd, it.q[t0*it.qs+lo:], it.qs, rows, group, r.pos+1, it.scale, ws.scratch[w])
}

// attnItemHeads is how many key/value heads one item of a decode step's
// attention reads in turns. Two measured best on the 0.6B at position
// 4,000: four left each of two goroutines one item a layer, with no
// balance between them (docs/BENCHMARKS.md).
var attnItemHeads = 2

// rowHeads prepares rows of a batch for attention: the per-head RMSNorm
// and RoPE of their queries and keys, and the keys and values stored in
// the rows' caches.
type rowHeads struct {
	a       *Attention
	b       *batch
	layer   int
	q, k, v []float32 // row t's heads at q[t*qs:], k[t*ks:], v[t*ks:]
	qs, ks  int
	fused   bool // prepared inside the attention items (ownBlocks)
}

// prepare does row t's query heads [h0, h1) and key/value heads [kh0, kh1);
// tmp is scratch of at least head_dim floats.
func (p *rowHeads) prepare(t, h0, h1, kh0, kh1 int, tmp []float32) {
	a, hd := p.a, p.a.HeadDim
	r := p.b.rows[t]
	cos, sin := p.b.rope.At(r.pos)
	for h := h0; h < h1; h++ {
		qh := p.q[t*p.qs+h*hd : t*p.qs+(h+1)*hd]
		kernels.RMSNorm(qh, qh, a.QNorm.W, a.QNorm.Eps)
		kernels.RoPE(qh, cos, sin)
	}
	for h := kh0; h < kh1; h++ {
		kh := p.k[t*p.ks+h*hd : t*p.ks+(h+1)*hd]
		kernels.RMSNorm(kh, kh, a.KNorm.W, a.KNorm.Eps)
		kernels.RoPE(kh, cos, sin)
		r.cache.put(p.layer, h, r.pos, kh, p.v[t*p.ks+h*hd:t*p.ks+(h+1)*hd], tmp)
	}
}

// ownBlocks reports whether every block (attnBlocks) holds all of its
// sequence's rows in the batch, as in a decode step: then each (block,
// head) item can store its own keys and values before attending, with no
// pass over the batch between (rows of one sequence are adjacent).
func ownBlocks(rows []row, starts []int) bool {
	for i := 1; i+1 < len(starts); i++ {
		if rows[starts[i]].cache == rows[starts[i]-1].cache {
			return false
		}
	}
	return true
}

// separatePrepare makes every batch prepare its rows in a pass of its
// own, as a batch whose sequences span several blocks does; tests and
// benchmarks compare the two ways.
var separatePrepare bool

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
