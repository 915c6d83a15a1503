package kernels

import (
	"fmt"
	"math"
	"sync"
	"unsafe"
)

// Int4Matrix is an AWQ 4-bit weight matrix (K inputs, N outputs, one scale
// and zero point per group of Group inputs and output) repacked for integer
// dot products. Outputs are grouped in blocks of 16; for each block and
// group, the codes are stored as Group/8 tiles of 64 bytes, where byte
// 4n+j of a tile covering inputs k0..k0+7 holds q[k0+j][n] in its low nibble
// and q[k0+4+j][n] in its high nibble. With the 4 activations a[k0+j]
// broadcast to every 32-bit lane, one VPDPBUSD per nibble half adds
// Σ_j q·a for 16 outputs at once. Each block and group also has a 48-byte
// record: the 16 float16 scales, then the 16 zero points.
type Int4Matrix struct {
	K, N, Group int
	// Coarse makes MatMulInt4 use only the coarse int8 row of each token
	// (activations to about 1/254 of their group's largest magnitude, the
	// accuracy of llama.cpp's 8-bit activations) and skip the residual
	// row: about half the integer work, at the cost of precision.
	Coarse bool

	blocks, groups int
	qs             []byte // [blocks][groups][Group/8][64]
	meta           []byte // [blocks][groups][48]: scales (0 past N), zeros

	// stack, when not nil, is the allocation qs and meta lie in, at
	// qsOff and metaOff (RepackAWQStacked); ConcatInt4 joins neighbours
	// in one stack without copying.
	stack          *int4Stack
	qsOff, metaOff int
}

// int4Stack is one allocation shared by matrices repacked together.
type int4Stack struct{ qs, meta []byte }

const int4Meta = 48 // bytes of scales and zeros per block and group

const int4Block = 16 // outputs per block

// Bytes reports the memory the repacked matrix occupies.
func (m *Int4Matrix) Bytes() int { return len(m.qs) + len(m.meta) }

// RepackAWQ builds an Int4Matrix from one AutoAWQ GEMM-format Linear:
// qweight [K][N/8] and qzeros [K/group][N/8] hold 4-bit codes packed 8 per
// word in nibble order 0,2,4,6,1,3,5,7 of the output column, scales
// [K/group][N] are float16 bits. The weight is W[n][k] = (q[k][n] -
// z[k/group][n])·s[k/group][n]. A nil qzeros means the symmetric variant,
// z = 8 everywhere.
func RepackAWQ(qweight, qzeros []int32, scales []uint16, K, N, group int) (*Int4Matrix, error) {
	ms, err := RepackAWQStacked([]AWQParts{{QWeight: qweight, QZeros: qzeros, Scales: scales, K: K, N: N}}, group)
	if err != nil {
		return nil, err
	}
	m := ms[0]
	m.stack = nil // alone in its allocation: nothing to join
	return m, nil
}

// AWQParts is one AutoAWQ GEMM projection's tensors (see RepackAWQ).
type AWQParts struct {
	QWeight, QZeros []int32
	Scales          []uint16
	K, N            int
}

// RepackAWQStacked repacks projections that share the group size into one
// allocation, in order, so that ConcatInt4 of the results (q, k and v;
// gate and up, which the engine runs as one product) joins them without
// copying. Each result is what RepackAWQ gives for its part.
func RepackAWQStacked(parts []AWQParts, group int) ([]*Int4Matrix, error) {
	return repackAWQStacked(parts, group, nil, nil)
}

// RepackAWQInto is RepackAWQStacked into qs and meta, which must be zeroed
// and exactly as long as the parts' codes and records (Int4LayoutSizes,
// summed): a mapped file, for instance, so that the repacked weights are
// kept without a copy. The matrices view qs and meta.
func RepackAWQInto(parts []AWQParts, group int, qs, meta []byte) ([]*Int4Matrix, error) {
	if qs == nil || meta == nil {
		return nil, fmt.Errorf("kernels: RepackAWQInto needs its buffers")
	}
	return repackAWQStacked(parts, group, qs, meta)
}

// repackAWQStacked repacks into qs and meta, or new buffers when they are
// nil.
func repackAWQStacked(parts []AWQParts, group int, qs, meta []byte) ([]*Int4Matrix, error) {
	ms := make([]*Int4Matrix, len(parts))
	var qlen, mlen int
	for i, p := range parts {
		K, N := p.K, p.N
		if K <= 0 || N <= 0 || N%8 != 0 {
			return nil, fmt.Errorf("kernels: AWQ matrix %d×%d: need positive sizes and a multiple of 8 outputs", K, N)
		}
		if group <= 0 || group%8 != 0 || K%group != 0 {
			return nil, fmt.Errorf("kernels: AWQ group size %d must be a multiple of 8 that divides %d inputs", group, K)
		}
		words, groups := N/8, K/group
		if len(p.QWeight) != K*words {
			return nil, fmt.Errorf("kernels: AWQ qweight has %d words, want [%d][%d] = %d", len(p.QWeight), K, words, K*words)
		}
		if p.QZeros != nil && len(p.QZeros) != groups*words {
			return nil, fmt.Errorf("kernels: AWQ qzeros has %d words, want [%d][%d] = %d", len(p.QZeros), groups, words, groups*words)
		}
		if len(p.Scales) != groups*N {
			return nil, fmt.Errorf("kernels: AWQ scales has %d values, want [%d][%d] = %d", len(p.Scales), groups, N, groups*N)
		}
		qn, mn, err := Int4LayoutSizes(K, N, group)
		if err != nil {
			return nil, err
		}
		ms[i] = &Int4Matrix{K: K, N: N, Group: group, blocks: (N + int4Block - 1) / int4Block, groups: groups, qsOff: qlen, metaOff: mlen}
		qlen += qn
		mlen += mn
	}
	if qs == nil {
		qs, meta = make([]byte, qlen), make([]byte, mlen)
	}
	if len(qs) != qlen || len(meta) != mlen {
		return nil, fmt.Errorf("kernels: AWQ repack needs %d code and %d record bytes, given %d and %d", qlen, mlen, len(qs), len(meta))
	}
	(&int4Stack{qs: qs, meta: meta}).place(ms)
	for i, p := range parts {
		m := ms[i]
		repackAWQCodes(m.qs, p.QWeight, p.K, p.N/8)
		repackAWQMeta(m.meta, p.QZeros, p.Scales, m.groups, p.N)
	}
	return ms, nil
}

// int4Acts holds the int8 activations of the rows the kernels multiply:
// for T tokens, 2T rows. Row t < T is token t quantized per weight group
// with step d = max|x|/127; row T+t is the residual x − a·d of the same
// token quantized with step d/254 (see int4QuantGeneric). a[r*K+k] holds
// the codes, d[r*G+g] the step and asum[r*G+g] = Σ a over the group (for
// the zero points). For each full block of 4 rows, a4/d4/asum4 hold the
// same values interleaved for the 4-row kernels: activation word w (4
// bytes) of row r at a4[blk*4K + 16w + 4r], and d4[blk*4G + 4g + r]; a
// final pair of rows is interleaved the same way with 2 in place of 4.
type int4Acts struct {
	K, G  int
	a     []int8
	d     []float32
	asum  []int32
	a4    []int8
	d4    []float32
	asum4 []int32
	af4   []float32 // asum4 as float32, for the unpacked kernels
	out   []float32 // [2T][N]: the two rows' products before they are added
	call  int4Call
}

func (p *int4Acts) token(t int) ([]int8, []float32, []int32) {
	K, G := p.K, p.G
	return p.a[t*K : (t+1)*K], p.d[t*G : (t+1)*G], p.asum[t*G : (t+1)*G]
}

// block returns the interleaved activations of rows t0..t0+n-1 (n is 4,
// or 2 for the final pair).
func (p *int4Acts) block(t0, n int) ([]int8, []float32, []int32) {
	K, G := p.K, p.G
	return p.a4[t0*K : (t0+n)*K], p.d4[t0*G : (t0+n)*G], p.asum4[t0*G : (t0+n)*G]
}

var int4ActsPool sync.Pool

func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

// prepare sizes p for R rows of K inputs in groups of group.
func (p *int4Acts) prepare(R, K, group int) {
	G := K / group
	p.K, p.G = K, G
	p.a, p.d, p.asum = grow(p.a, R*K), grow(p.d, R*G), grow(p.asum, R*G)
	p.a4, p.d4, p.asum4 = grow(p.a4, R*K), grow(p.d4, R*G), grow(p.asum4, R*G)
	p.af4 = grow(p.af4, R*G)
}

// quantize fills rows t and T+t of p for tokens lo <= t < hi of x.
func (p *int4Acts) quantize(quant int4Quant, x []float32, T, lo, hi, group int) {
	K := p.K
	for t := lo; t < hi; t++ {
		a, d, s := p.token(t)
		a2, d2, s2 := p.token(T + t)
		quant(x[t*K:(t+1)*K], a, a2, d, d2, s, s2, group)
	}
}

// interleave fills the blocks of rows [lo, hi): 4 rows at a time, then a
// final pair (lo%4 == 0; hi%4 == 0 or hi is the row count, which is even).
func (p *int4Acts) interleave(ik *int4Kernels, lo, hi int) {
	for t0 := lo; t0+2 <= hi; {
		n := 4
		if t0+4 > hi {
			n = 2
		}
		p.interleaveBlock(ik, t0, n)
		t0 += n
	}
}

func (p *int4Acts) interleaveBlock(ik *int4Kernels, t0, n int) {
	K, G := p.K, p.G
	a4, d4, s4 := p.block(t0, n)
	switch {
	case n == 4 && ik.interleave4 != nil && K%64 == 0:
		ik.interleave4(a4, p.a[t0*K:(t0+4)*K], K)
	case n == 2 && ik.interleave2 != nil && K%64 == 0:
		ik.interleave2(a4, p.a[t0*K:(t0+2)*K], K)
	default:
		w4 := unsafe.Slice((*uint32)(unsafe.Pointer(&a4[0])), n*K/4)
		for t := range n {
			a, _, _ := p.token(t0 + t)
			w := unsafe.Slice((*uint32)(unsafe.Pointer(&a[0])), K/4)
			for i, v := range w {
				w4[n*i+t] = v
			}
		}
	}
	for t := range n {
		_, d, asum := p.token(t0 + t)
		af4 := p.af4[t0*G : (t0+n)*G]
		for g := range G {
			d4[n*g+t], s4[n*g+t], af4[n*g+t] = d[g], asum[g], float32(asum[g])
		}
	}
}

// int4Quant quantizes one token's activations x into its coarse row (a, d,
// asum) and residual row (a2, d2, asum2), group by group.
type int4Quant func(x []float32, a, a2 []int8, d, d2 []float32, asum, asum2 []int32, group int)

// int4QuantGeneric is the reference quantizer. Per group, with
// amax = max|x|: d = amax/127 and a = round(x·(127/amax)), then the
// residual r = x − a·d gets d2 = d/254 and a2 = round(r·(127/amax)·254),
// all in float32, rounding half to even and clamping to ±127. Σ a·d +
// Σ a2·d2 then reproduces x to about 2⁻¹⁶ of amax, so the int4 products
// are as accurate as float activations for all practical purposes, while
// every multiply stays an exact integer dot product. A group whose amax is
// below int4TinyGroup (zero, in practice) has zero codes and steps; a group holding NaN or ±Inf has zero codes and
// NaN steps, so its outputs are NaN.
func int4QuantGeneric(x []float32, a, a2 []int8, d, d2 []float32, asum, asum2 []int32, group int) {
	for g := range d {
		xs := x[g*group : (g+1)*group]
		as, as2 := a[g*group:(g+1)*group], a2[g*group:(g+1)*group]
		var amax float32
		bad := false
		for _, v := range xs {
			bad = bad || v-v != 0
			if v < 0 {
				v = -v
			}
			if v > amax {
				amax = v
			}
		}
		if bad || amax < int4TinyGroup {
			clear(as)
			clear(as2)
			d[g], d2[g], asum[g], asum2[g] = 0, 0, 0, 0
			if bad {
				d[g], d2[g] = float32(math.NaN()), float32(math.NaN())
			}
			continue
		}
		inv := 127 / amax
		dg := amax / 127
		inv2 := inv * 254
		var s, s2 int32
		for k, v := range xs {
			q := roundClamp127(v * inv)
			r := v - float32(float32(q)*dg)
			q2 := roundClamp127(r * inv2)
			as[k], as2[k] = int8(q), int8(q2)
			s, s2 = s+q, s2+q2
		}
		d[g], d2[g], asum[g], asum2[g] = dg, dg/254, s, s2
	}
}

// int4TinyGroup is the largest magnitude below which a group counts as zero:
// 127/amax must not overflow, and such activations are noise.
const int4TinyGroup = 0x1p-100

// roundClamp127 rounds v half to even, as VCVTPS2DQ does, into [-127, 127].
func roundClamp127(v float32) int32 {
	return int32(max(-127, min(127, math.RoundToEven(float64(v)))))
}

// int4Kernels computes blocks of 16 outputs from quantized activations.
// Each output accumulates, group by group in increasing order, the exact
// integer Σ q·a − z·Σa converted to float32 and scaled by s·d; the float
// steps are the same on every path of one implementation.
type int4Kernels struct {
	quant int4Quant
	// gemv writes dst[16*(b-b0)+i] for blocks b0 <= b < b1 (b1 > b0) of
	// token t.
	gemv func(dst []float32, m *Int4Matrix, b0, b1 int, acts *int4Acts, t int)
	// gemm4 does the same for rows t0..t0+3 (t0%4 == 0), rows of dst at
	// stride ldd; gemm2 for the pair of rows t0, t0+1 after the last block
	// of 4.
	gemm4, gemm2 func(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int)
	// gemm4Stream, when set, is gemm4 (bitwise) for the first rows of a
	// chunk of blocks, whose codes come from memory: it prefetches them
	// and reads more streams at once, which the later rows, reading the
	// codes again from L2, do without.
	gemm4Stream func(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int)
	// gemm8, when set, is gemm4 for rows t0..t0+7 (two 4-row blocks) in
	// one pass over the codes.
	gemm8 func(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int)
	// interleave4, when set, interleaves 4 activation rows of k inputs
	// (a multiple of 64) by 4-byte word: dst[16w+4r:][:4] =
	// src[r*k+4w:][:4]; interleave2 a pair of rows the same way,
	// dst[8w+4r:][:4] = src[r*k+4w:][:4].
	interleave4, interleave2 func(dst, src []int8, k int)
	// unpacked, when set, computes products of many rows (prefill) from
	// codes unpacked to bytes; see int4RowsU.
	unpacked *int4UKernels
}

// MatMulInt4 computes dst[t*N+n] = Σ_k x[t*K+k]·W[n][k] for t < T with the
// AWQ weight w. Each token's activations become two int8 rows, a coarse
// one and its residual (see int4QuantGeneric); both are multiplied with
// the int4 codes as exact integer dot products, and the two products are
// added. Work is split across Threads() goroutines.
func MatMulInt4(dst, x []float32, w *Int4Matrix, T int) {
	K, N := w.K, w.N
	if T < 0 || len(dst) < T*N || len(x) < T*K {
		panic(fmt.Sprintf("kernels: MatMulInt4 T=%d K=%d N=%d needs dst %d and x %d; have %d, %d", T, K, N, T*N, T*K, len(dst), len(x)))
	}
	if T == 0 {
		return
	}
	acts, _ := int4ActsPool.Get().(*int4Acts)
	if acts == nil {
		acts = new(int4Acts)
	}
	defer int4ActsPool.Put(acts)
	R := 2 * T
	acts.prepare(R, K, w.Group)
	if w.Coarse {
		R = T // the residual rows are quantized but not multiplied
	}
	ik := &active.int4
	if T >= 8 {
		parallelRows(T, 4, rangeFunc(func(lo, hi int) { acts.quantize(ik.quant, x, T, lo, hi, w.Group) }))
		parallelRows(R, 4, rangeFunc(func(lo, hi int) { acts.interleave(ik, lo, hi) }))
	} else {
		acts.quantize(ik.quant, x, T, 0, T, w.Group)
		acts.interleave(ik, 0, R)
	}
	unpacked := ik.unpacked != nil && R >= int4UMinRows && w.Group <= int4UMaxGroup
	if !w.Coarse && (!unpacked || w.N%int4Block != 0) {
		acts.out = grow(acts.out, R*N)
	}
	c := &acts.call
	*c = int4Call{ik: ik, dst: dst, out: acts.out, w: w, acts: acts, T: T, R: R, unpacked: unpacked}
	defer func() { *c = int4Call{} }() // the pooled acts keep no caller's memory
	switch {
	case R*K*N < 4*serialMACs:
		c.runRange(0, w.blocks)
	case unpacked || w.Bytes() >= int4BalancedBytes:
		parallelRowsBalanced(w.blocks, 4, c)
	default:
		parallelRows(w.blocks, 4, c)
	}
}

// int4Call is one MatMulInt4's loop over output blocks. It lives in the
// call's pooled activations, so handing it to the goroutines allocates
// nothing.
type int4Call struct {
	ik       *int4Kernels
	dst, out []float32
	w        *Int4Matrix
	acts     *int4Acts
	T, R     int
	unpacked bool
}

// runRange computes output blocks [lo, hi) of every token.
func (c *int4Call) runRange(lo, hi int) {
	ik, dst, out, w, acts, T, R, N := c.ik, c.dst, c.out, c.w, c.acts, c.T, c.R, c.w.N
	if c.unpacked {
		full := min(hi, N/int4Block)
		if full > lo {
			int4RowsU(ik, dst, w, acts, T, R, lo, full)
			lo = full
		}
		if lo == hi {
			return
		}
	}
	if w.Coarse {
		int4Rows(ik, dst, w, acts, T, lo, hi)
		return
	}
	int4Rows(ik, out, w, acts, R, lo, hi)
	// Add each token's two rows over this goroutine's outputs.
	n0, n1 := lo*int4Block, min(N, hi*int4Block)
	if uk := ik.unpacked; uk != nil {
		w16 := (n1 - n0) &^ 15
		uk.addRows(dst[n0:], N, out[n0:], out[T*N+n0:], N, T, w16)
		n0 += w16
	}
	for t := range T {
		c, r, y := out[t*N+n0:t*N+n1], out[(T+t)*N+n0:(T+t)*N+n1], dst[t*N+n0:t*N+n1]
		for i := range y {
			y[i] = c[i] + r[i]
		}
	}
}

// int4BalancedBytes is the size from which a few tokens' product is cut
// into several chunks per goroutine, handed out as goroutines finish,
// instead of one share each: a core held up meanwhile (another process,
// the hypervisor) then delays the product by a chunk, not by its share.
// Smaller matrices (all of the 0.6B's, 1–3 MB) keep one share each:
// there the extra chunks cost more than the balance gains.
const int4BalancedBytes = 4 << 20

// int4Rows computes output blocks [lo, hi) for all tokens; the last block
// of a matrix whose N is not a multiple of 16 goes through a scratch tile.
func int4Rows(ik *int4Kernels, dst []float32, w *Int4Matrix, acts *int4Acts, T, lo, hi int) {
	K, N := w.K, w.N
	full := hi
	if hi*int4Block > N {
		full = hi - 1
	}
	block := max(1, l2Block/(8*K)) // K/8 tiles of 64 bytes per block
	if T == 1 || T == 2 || T == 4 || T == 8 && ik.gemm8 != nil {
		// One kernel call covers every row (a token, or its coarse and
		// residual rows): the weights are read once whatever the chunks,
		// so chunks would only cut the range into calls whose last blocks
		// take the kernels' one-block tiles. Those run a quarter as many
		// independent sums and, at K = 12288 (two blocks per chunk), held
		// a large product to 0.6 of the reads one call reaches.
		block = max(1, full-lo)
	}
	for b0 := lo; b0 < full; b0 += block {
		b1 := min(full, b0+block)
		t := 0
		for ; ik.gemm8 != nil && t+8 <= T; t += 8 {
			ik.gemm8(dst[t*N+b0*int4Block:], N, w, b0, b1, acts, t)
		}
		for ; t+4 <= T; t += 4 {
			gemm4 := ik.gemm4
			if t == 0 && ik.gemm4Stream != nil {
				gemm4 = ik.gemm4Stream
			}
			gemm4(dst[t*N+b0*int4Block:], N, w, b0, b1, acts, t)
		}
		if t+2 <= T {
			ik.gemm2(dst[t*N+b0*int4Block:], N, w, b0, b1, acts, t)
			t += 2
		}
		for ; t < T; t++ {
			ik.gemv(dst[t*N+b0*int4Block:t*N+b1*int4Block], w, b0, b1, acts, t)
		}
	}
	if full == hi {
		return
	}
	var tmp [int4Block]float32
	n0 := full * int4Block
	for t := range T {
		ik.gemv(tmp[:], w, full, hi, acts, t)
		copy(dst[t*N+n0:(t+1)*N], tmp[:])
	}
}
