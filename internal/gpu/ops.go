package gpu

import (
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/qwen3"
)

// gpuOps is the GPU's implementation of qwen3.Ops: every operation queued
// as kernel launches on the model's stream over one forward's workspace.
// The first failed launch is kept in err and the later ones are skipped.
type gpuOps struct {
	m      *Model
	w      *workspace
	T      int
	mp     metaPtrs
	logits [4]uint64 // ActLogits…: each classifier's [T][classes] block (logitPieces)
	err    error
}

// newGPUOps binds the operations of a forward of T tokens to w and mp.
func (m *Model) newGPUOps(w *workspace, T int, mp metaPtrs) *gpuOps {
	o := &gpuOps{m: m, w: w, T: T, mp: mp}
	pieces, _ := m.logitPieces(T)
	for i, p := range pieces {
		o.logits[i] = w.logits.Offset(p.off * 4)
	}
	return o
}

var _ qwen3.Ops = (*gpuOps)(nil)

func (o *gpuOps) launch(f *cuda.Function, grid, block cuda.Dim3, args ...any) {
	if o.err == nil {
		o.err = f.LaunchOn(o.m.stream, grid, block, args...)
	}
}

// ptr is the device address of an activation. ActMLP is w.up: the fused
// gate|up product fills w.gate ([T][2·inter]) and silu_mul_rows writes
// w.up; separate gate and up products fill w.gate and w.up, and silu_mul
// writes w.up in place. ActOut is w.o.
func (o *gpuOps) ptr(a qwen3.Act) uint64 {
	w := o.w
	switch {
	case a == qwen3.ActHidden:
		return w.h.Ptr
	case a == qwen3.ActNormed:
		return w.xn.Ptr
	case a == qwen3.ActAttn:
		return w.att.Ptr
	case a == qwen3.ActMLP:
		return w.up.Ptr
	case a == qwen3.ActOut:
		return w.o.Ptr
	case a == qwen3.ActPre:
		return w.pre.Ptr
	case a >= qwen3.ActLogits && a < qwen3.ActLogits+4:
		return o.logits[a-qwen3.ActLogits]
	}
	o.fail("activation %d has no buffer", a)
	return 0
}

func (o *gpuOps) fail(format string, args ...any) {
	if o.err == nil {
		o.err = fmt.Errorf("gpu: "+format, args...)
	}
}

// linear is the uploaded projection w names.
func (o *gpuOps) linear(w qwen3.Weight) *linear {
	m := o.m
	switch w.Tensor {
	case qwen3.OProj:
		return m.layers[w.Layer].o
	case qwen3.DownProj:
		return m.layers[w.Layer].down
	case qwen3.HeadPre:
		return m.heads[w.Layer].pre
	case qwen3.HeadRisk:
		return m.heads[w.Layer].risk
	case qwen3.HeadCategory:
		return m.heads[w.Layer].cat
	}
	o.fail("tensor %d is not one projection", w.Tensor)
	return nil
}

// Embed implements qwen3.Ops: the rows of the table at the step's ids.
func (o *gpuOps) Embed(dst qwen3.Act) {
	m := o.m
	o.launch(m.k.embed, cuda.Dim3{X: uint32(o.T)}, cuda.Dim3{X: threads}, o.ptr(dst), m.embed.Ptr, o.mp.ids, int32(m.Hidden))
}

// Norm implements qwen3.Ops: one block per row.
func (o *gpuOps) Norm(dst, x qwen3.Act, w qwen3.Weight) {
	m := o.m
	var wt *cuda.Buffer
	d := m.Hidden
	switch w.Tensor {
	case qwen3.AttnNorm:
		wt = m.layers[w.Layer].attnNorm
	case qwen3.MLPNorm:
		wt = m.layers[w.Layer].mlpNorm
	case qwen3.FinalNorm:
		wt = m.norm
	case qwen3.HeadNorm:
		wt, d = m.heads[w.Layer].norm, m.heads[w.Layer].inner
	default:
		o.fail("tensor %d is not a norm", w.Tensor)
		return
	}
	o.launch(m.k.rmsnorm, cuda.Dim3{X: uint32(o.T)}, normBlock(d), o.ptr(dst), o.ptr(x), wt.Ptr, int32(d), m.eps)
}

// Project implements qwen3.Ops. q|k|v and gate|up run as one fused
// product where the layer has one (fuse.go), else as three and two into
// w.q, w.k, w.v and w.gate, w.up. An accumulated product adds in the
// tensor-core kernels' epilogue (h + v, the one rounding of the add), or
// else goes through w.o and an add.
func (o *gpuOps) Project(dst, x qwen3.Act, w qwen3.Weight, accumulate bool) {
	ws, xp := o.w, o.ptr(x)
	switch w.Tensor {
	case qwen3.QKVProj:
		l := &o.m.layers[w.Layer]
		o.stacked(xp, l.qkv, ws.qkv.Ptr, []*linear{l.q, l.k, l.v}, []uint64{ws.q.Ptr, ws.k.Ptr, ws.v.Ptr})
		return
	case qwen3.GateUpProj:
		l := &o.m.layers[w.Layer]
		o.stacked(xp, l.gateUp, ws.gate.Ptr, []*linear{l.gate, l.up}, []uint64{ws.gate.Ptr, ws.up.Ptr})
		return
	}
	l := o.linear(w)
	if l == nil {
		return
	}
	y := o.ptr(dst)
	if !accumulate {
		o.product(y, xp, l, false)
		return
	}
	if l.mma && l.bias == nil {
		o.product(y, xp, l, true)
		return
	}
	o.product(ws.o.Ptr, xp, l, false)
	n := o.T * l.n
	o.launch(o.m.k.add, cuda.Dim3{X: blocks(n)}, cuda.Dim3{X: threads}, y, ws.o.Ptr, int32(n))
}

// stacked computes projections of the same input x: the fused one into y
// when the layer has it, else each part into its own buffer.
func (o *gpuOps) stacked(x uint64, fused *linear, y uint64, parts []*linear, ys []uint64) {
	if fused != nil {
		o.product(y, x, fused, false)
		return
	}
	for i, l := range parts {
		o.product(ys[i], x, l, false)
	}
}

// product computes y = l(x), or with accum (tensor cores only) y += l(x).
func (o *gpuOps) product(y, x uint64, l *linear, accum bool) {
	T, k := o.T, &o.m.k
	const warps = 8
	grid, block := cuda.Dim3{X: uint32((l.n + warps - 1) / warps), Y: uint32((T + 7) / 8)}, cuda.Dim3{X: warps * 32}
	if l.mma {
		// The tile height changes the work's shape, not a token's
		// arithmetic (mma.cuh), so choosing it by T keeps verdicts
		// independent of the batch.
		bm, nt, fbf, fawq := 16, 1, k.mmaBF16M16, k.mmaAWQM16
		switch {
		case T <= mmaSkinny:
			bm, fbf, fawq = T, k.mmaBF16S, k.mmaAWQS // one row of blocks
		case T > mmaTallTiles:
			bm, nt, fbf, fawq = 64, 2, k.mmaBF16M64, k.mmaAWQM64
		}
		per := mmaWarps * nt
		grid, block = cuda.Dim3{X: uint32((l.n/8 + per - 1) / per), Y: uint32((T + bm - 1) / bm)}, cuda.Dim3{X: mmaWarps * 32}
		if y%8 != 0 || x%16 != 0 {
			// The kernels load float4s of x and store float2s of y: a
			// misaligned address would be a fault that ends the context.
			o.fail("tensor-core product of %d×%d: output at %#x or input at %#x misaligned", l.n, l.k, y, x)
			return
		}
		acc := int32(0)
		if accum {
			acc = 1
		}
		if l.format == fmtAWQ {
			o.launch(fawq, grid, block, y, x, l.w.Ptr, l.scales.Ptr, l.neg.Ptr, int32(T), int32(l.n), int32(l.k), int32(l.group), acc)
		} else {
			o.launch(fbf, grid, block, y, x, l.w.Ptr, int32(T), int32(l.n), int32(l.k), acc)
		}
	} else {
		switch l.format {
		case fmtBF16:
			o.launch(k.matmulBF16, grid, block, y, x, l.w.Ptr, int32(T), int32(l.n), int32(l.k))
		case fmtF16:
			o.launch(k.matmulF16, grid, block, y, x, l.w.Ptr, int32(T), int32(l.n), int32(l.k))
		case fmtAWQ:
			o.launch(k.matmulAWQ, grid, block, y, x, l.w.Ptr, l.scales.Ptr, l.zs.Ptr, int32(T), int32(l.n), int32(l.k), int32(l.group))
		}
	}
	if l.bias != nil {
		o.launch(k.addBias, cuda.Dim3{X: blocks(T * l.n)}, cuda.Dim3{X: threads}, y, l.bias.Ptr, int32(T), int32(l.n))
	}
}

// Attend implements qwen3.Ops: qk_prep (q and k norms, RoPE, the bf16
// cache store) and the attention over the paged cache — on the tensor
// cores (chunks, then their merge) where attn.cuh fits, else one block per
// token and head.
func (o *gpuOps) Attend(i int, dst, _ qwen3.Act) {
	m, w, mp, k, T := o.m, o.w, o.mp, &o.m.k, o.T
	hd := m.HeadDim
	qd, kvd := m.Heads*hd, m.KVHeads*hd
	l := &m.layers[i]
	// Row t's q, k and v heads: in the fused product's columns q | k | v,
	// or in three buffers.
	qsrc, ksrc, vsrc, qst, kst, vst := w.q.Ptr, w.k.Ptr, w.v.Ptr, qd, kvd, kvd
	if l.qkv != nil {
		st := qd + 2*kvd
		qsrc, ksrc, vsrc, qst, kst, vst = w.qkv.Ptr, w.qkv.Offset(int64(qd)*4), w.qkv.Offset(int64(qd+kvd)*4), st, st, st
	}
	o.launch(k.qkPrep, cuda.Dim3{X: uint32(T), Y: uint32(m.Heads + m.KVHeads)}, normBlock(hd),
		w.q.Ptr, m.kc[i].Ptr, m.vc[i].Ptr, qsrc, ksrc, vsrc, int32(qst), int32(kst), int32(vst), l.qNorm.Ptr, l.kNorm.Ptr,
		m.cos.Ptr, m.sin.Ptr, mp.pos, mp.slots, int32(m.Heads), int32(m.KVHeads), int32(hd), m.eps)
	scale := float32(1 / math.Sqrt(float64(hd)))
	if m.attnMMA {
		// Every tile slot of the layout (T), every head, attnSplits
		// blocks sharing each tile's chunks; then the chunks merged.
		o.launch(k.attnChunk, cuda.Dim3{X: uint32(T), Y: uint32(m.Heads), Z: attnSplits}, cuda.Dim3{X: 128},
			w.states.Ptr, w.q.Ptr, m.kc[i].Ptr, m.vc[i].Ptr, mp.tiles, mp.tables, mp.toff, mp.pos, mp.soff,
			int32(m.Heads), int32(m.KVHeads), int32(m.pool.BlockSize), scale)
		o.launch(k.attnMerge, cuda.Dim3{X: uint32(T), Y: uint32(m.Heads)}, cuda.Dim3{X: attnHeadDim},
			o.ptr(dst), w.states.Ptr, mp.pos, mp.soff, int32(m.Heads))
		return
	}
	o.launch(k.attention, cuda.Dim3{X: uint32(T), Y: uint32(m.Heads)}, cuda.Dim3{X: 128},
		o.ptr(dst), w.q.Ptr, m.kc[i].Ptr, m.vc[i].Ptr, mp.tables, mp.toff, mp.pos,
		int32(m.Heads), int32(m.KVHeads), int32(hd), int32(m.pool.BlockSize), scale)
}

// SiLUMul implements qwen3.Ops.
func (o *gpuOps) SiLUMul(i int, dst, _ qwen3.Act) {
	m, w, n := o.m, o.w, o.T*o.m.Inter
	if m.layers[i].gateUp != nil {
		o.launch(m.k.siluMulRows, cuda.Dim3{X: blocks(n)}, cuda.Dim3{X: threads}, o.ptr(dst), w.gate.Ptr, int32(m.Inter), int32(o.T))
		return
	}
	o.launch(m.k.siluMul, cuda.Dim3{X: blocks(n)}, cuda.Dim3{X: threads}, o.ptr(dst), w.gate.Ptr, w.up.Ptr, int32(n))
}
