package kernels

import (
	"fmt"
	"math"
	"sync"
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

	blocks, groups int
	qs             []byte // [blocks][groups][Group/8][64]
	meta           []byte // [blocks][groups][48]: scales (0 past N), zeros
}

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
	if K <= 0 || N <= 0 || N%8 != 0 {
		return nil, fmt.Errorf("kernels: AWQ matrix %d×%d: need positive sizes and a multiple of 8 outputs", K, N)
	}
	if group <= 0 || group%8 != 0 || K%group != 0 {
		return nil, fmt.Errorf("kernels: AWQ group size %d must be a multiple of 8 that divides %d inputs", group, K)
	}
	words, groups := N/8, K/group
	if len(qweight) != K*words {
		return nil, fmt.Errorf("kernels: AWQ qweight has %d words, want [%d][%d] = %d", len(qweight), K, words, K*words)
	}
	if qzeros != nil && len(qzeros) != groups*words {
		return nil, fmt.Errorf("kernels: AWQ qzeros has %d words, want [%d][%d] = %d", len(qzeros), groups, words, groups*words)
	}
	if len(scales) != groups*N {
		return nil, fmt.Errorf("kernels: AWQ scales has %d values, want [%d][%d] = %d", len(scales), groups, N, groups*N)
	}
	blocks := (N + int4Block - 1) / int4Block
	tiles := group / 8
	m := &Int4Matrix{
		K: K, N: N, Group: group, blocks: blocks, groups: groups,
		qs:   make([]byte, blocks*groups*tiles*64),
		meta: make([]byte, blocks*groups*int4Meta),
	}
	repackAWQCodes(m.qs, qweight, K, words)
	repackAWQMeta(m.meta, qzeros, scales, groups, N)
	return m, nil
}

// int4Acts holds T tokens' activations quantized to int8 per group of the
// matrix: a[t*K+k] = round(x/d) with d = max|x|/127 over the group, d[t*G+g]
// that step and asum[t*G+g] = Σ a over the group (for the zero points).
// For each full block of 4 tokens, a4/d4/asum4 hold the same values
// interleaved for the 4-token kernels: activation word w (4 bytes) of token
// t at a4[blk*4K + 16w + 4t], and d4[blk*4G + 4g + t].
type int4Acts struct {
	K, G  int
	a     []int8
	d     []float32
	asum  []int32
	a4    []int8
	d4    []float32
	asum4 []int32
}

func (p *int4Acts) token(t int) ([]int8, []float32, []int32) {
	K, G := p.K, p.G
	return p.a[t*K : (t+1)*K], p.d[t*G : (t+1)*G], p.asum[t*G : (t+1)*G]
}

// block4 returns the interleaved activations of tokens t0..t0+3 (t0%4 == 0).
func (p *int4Acts) block4(t0 int) ([]int8, []float32, []int32) {
	K, G := p.K, p.G
	return p.a4[t0*K : (t0+4)*K], p.d4[t0*G : (t0+4)*G], p.asum4[t0*G : (t0+4)*G]
}

var int4ActsPool sync.Pool

func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

// prepare sizes p for T tokens of K inputs in groups of group.
func (p *int4Acts) prepare(T, K, group int) {
	G := K / group
	p.K, p.G = K, G
	p.a, p.d, p.asum = grow(p.a, T*K), grow(p.d, T*G), grow(p.asum, T*G)
	full := T &^ 3
	p.a4, p.d4, p.asum4 = grow(p.a4, full*K), grow(p.d4, full*G), grow(p.asum4, full*G)
}

// quantize fills tokens [lo, hi) of p from x (lo%4 == 0, and hi%4 == 0 or
// hi == T), including the interleaved copies of full 4-token blocks.
func (p *int4Acts) quantize(x []float32, lo, hi, group int) {
	K, G := p.K, p.G
	for t := lo; t < hi; t++ {
		a, d, asum := p.token(t)
		quantizeActs(a, d, asum, x[t*K:(t+1)*K], group)
	}
	for t0 := lo; t0+4 <= hi; t0 += 4 {
		a4, d4, s4 := p.block4(t0)
		for t := range 4 {
			a, d, asum := p.token(t0 + t)
			for w := range K / 4 {
				copy(a4[16*w+4*t:16*w+4*t+4], a[4*w:4*w+4])
			}
			for g := range G {
				d4[4*g+t], s4[4*g+t] = d[g], asum[g]
			}
		}
	}
}

// quantizeActs quantizes one token: symmetric int8 per group, round half to
// even, so that Σ_k q·a·d approximates Σ_k q·x with relative error about
// 1/254 of the group's largest |x|.
func quantizeActs(a []int8, d []float32, asum []int32, x []float32, group int) {
	for g := range d {
		xs := x[g*group : (g+1)*group]
		as := a[g*group : (g+1)*group]
		var amax float32
		for _, v := range xs {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if amax == 0 || amax != amax {
			// An all-zero group contributes nothing; NaN is carried by d.
			clear(as)
			d[g], asum[g] = amax, 0
			continue
		}
		inv := 127 / amax
		var s int32
		for k, v := range xs {
			q := math.RoundToEven(float64(v * inv))
			q = max(-127, min(127, q))
			as[k] = int8(q)
			s += int32(q)
		}
		d[g], asum[g] = amax/127, s
	}
}

// int4Kernels computes blocks of 16 outputs from quantized activations.
// Each output accumulates, group by group in increasing order, the exact
// integer Σ q·a − z·Σa converted to float32 and scaled by s·d; the float
// steps are the same on every path of one implementation.
type int4Kernels struct {
	// gemv writes dst[16*(b-b0)+i] for blocks b0 <= b < b1 (b1 > b0) of
	// token t.
	gemv func(dst []float32, m *Int4Matrix, b0, b1 int, acts *int4Acts, t int)
	// gemm4 does the same for tokens t0..t0+3 (t0%4 == 0), token rows of
	// dst at stride ldd.
	gemm4 func(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int)
}

// MatMulInt4 computes dst[t*N+n] = Σ_k x[t*K+k]·W[n][k] for t < T with the
// AWQ weight w, quantizing each token's activations to int8 per weight
// group (see quantizeActs). Work is split across Threads() goroutines.
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
	acts.prepare(T, K, w.Group)
	if T >= 8 {
		parallelRows(T, 4, func(lo, hi int) { acts.quantize(x, lo, hi, w.Group) })
	} else {
		acts.quantize(x, 0, T, w.Group)
	}
	ik := &active.int4
	run := func(lo, hi int) { int4Rows(ik, dst[:T*N], w, acts, T, lo, hi) }
	if T*K*N < 4*serialMACs {
		run(0, w.blocks)
		return
	}
	parallelRows(w.blocks, 2, run)
}

// int4Rows computes output blocks [lo, hi) for all tokens; the last block
// of a matrix whose N is not a multiple of 16 goes through a scratch tile.
func int4Rows(ik *int4Kernels, dst []float32, w *Int4Matrix, acts *int4Acts, T, lo, hi int) {
	K, N := w.K, w.N
	full := hi
	if hi*int4Block > N {
		full = hi - 1
	}
	block := max(1, l2Block/(8*K)) // K/8 tiles of 64 bytes per block
	for b0 := lo; b0 < full; b0 += block {
		b1 := min(full, b0+block)
		t := 0
		for ; t+4 <= T; t += 4 {
			ik.gemm4(dst[t*N+b0*int4Block:], N, w, b0, b1, acts, t)
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
