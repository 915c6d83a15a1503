package kernels

import (
	"fmt"
	"sync"
	"unsafe"
)

// MatMulF32 computes dst[t*N+n] = Σ_k x[t*K+k]·w[n*K+k] for t < T, n < N,
// accumulating in float32. w is row-major [N][K] (nn.Linear layout).
// Work is split across Threads() goroutines by output column.
func MatMulF32(dst, x, w []float32, T, K, N int) {
	matmul(&active.f32, dst, x, w, T, K, N)
}

// MatMulBF16 is MatMulF32 with bfloat16 weights (raw bit patterns).
func MatMulBF16(dst, x []float32, w []uint16, T, K, N int) {
	matmul(&active.bf16, dst, x, w, T, K, N)
}

// MatMulF16 is MatMulF32 with IEEE binary16 weights (raw bit patterns).
func MatMulF16(dst, x []float32, w []uint16, T, K, N int) {
	matmul(&active.f16, dst, x, w, T, K, N)
}

// serialMACs is the product size below which a matmul stays on the calling
// goroutine: waking helpers costs a few microseconds.
const serialMACs = 1 << 16

// rowAlign keeps thread chunks on whole register tiles and cache lines.
const rowAlign = 16

func matmul[W float32 | uint16](mk *matKernels[W], dst, x []float32, w []W, T, K, N int) {
	if T < 0 || K < 0 || N < 0 {
		panic(fmt.Sprintf("kernels: matmul with negative shape T=%d K=%d N=%d", T, K, N))
	}
	if len(dst) < T*N || len(x) < T*K || len(w) < N*K {
		panic(fmt.Sprintf("kernels: matmul T=%d K=%d N=%d needs dst %d, x %d, w %d; have %d, %d, %d",
			T, K, N, T*N, T*K, N*K, len(dst), len(x), len(w)))
	}
	if T == 0 || N == 0 {
		return
	}
	dst, x, w = dst[:T*N], x[:T*K], w[:N*K]
	if K == 0 {
		clear(dst)
		return
	}
	if T*K*N < serialMACs {
		matmulRows(mk, dst, x, w, T, K, N, 0, N)
		return
	}
	var zero W
	calls := &matCalls[unsafe.Sizeof(zero)/4] // float32 or 16-bit weights
	c, _ := calls.Get().(*matCall[W])
	if c == nil {
		c = new(matCall[W])
	}
	*c = matCall[W]{mk: mk, dst: dst, x: x, w: w, T: T, K: K, N: N}
	parallelRows(N, rowAlign, c)
	*c = matCall[W]{} // the pool keeps no caller's memory
	calls.Put(c)
}

// matCall is one product's loop over output rows, taken from matCalls so
// that handing it to the goroutines allocates nothing.
type matCall[W float32 | uint16] struct {
	mk      *matKernels[W]
	dst, x  []float32
	w       []W
	T, K, N int
}

func (c *matCall[W]) runRange(lo, hi int) {
	matmulRows(c.mk, c.dst, c.x, c.w, c.T, c.K, c.N, lo, hi)
}

// matCalls holds idle *matCall[uint16] (index 0) and *matCall[float32]
// (index 1).
var matCalls [2]sync.Pool

// l2Block is the weight bytes a row block should occupy so that it stays in
// L2 while every token block passes over it.
const l2Block = 192 << 10

// matmulRows computes output columns [lo, hi) for all T tokens.
func matmulRows[W float32 | uint16](mk *matKernels[W], dst, x []float32, w []W, T, K, N, lo, hi int) {
	kk := K &^ (mk.kstep - 1)
	var zero W
	wsize := int(unsafe.Sizeof(zero))
	block := max(4, (l2Block/(K*wsize))&^3)
	if T == 1 || T == 4 || T == 2 && mk.gemm2 != nil {
		// One kernel call covers every token: the weights are read once
		// whatever the chunks, and a whole range lets gemv's streams run
		// through a quarter of it (see int4Rows).
		block = hi - lo
	}
	for nb := lo; nb < hi; nb += block {
		nr := min(block, hi-nb)
		wb := w[nb*K : (nb+nr)*K]
		t := 0
		for ; t+4 <= T; t += 4 {
			mk.gemm4(dst[t*N+nb:], N, x[t*K:(t+4)*K], K, wb, kk, nr, K)
		}
		if t+2 <= T && mk.gemm2 != nil {
			mk.gemm2(dst[t*N+nb:], N, x[t*K:(t+2)*K], K, wb, kk, nr, K)
			t += 2
		}
		for ; t < T; t++ {
			mk.gemv(dst[t*N+nb:t*N+nb+nr], x[t*K:(t+1)*K], wb, kk, nr, K)
		}
	}
	if kk == K {
		return
	}
	// K tail: the same sequential additions after the kernel's reduction,
	// whatever path produced it.
	for t := range T {
		xt := x[t*K+kk : (t+1)*K]
		for n := lo; n < hi; n++ {
			wn := w[n*K+kk : (n+1)*K]
			s := dst[t*N+n]
			for i, xv := range xt {
				s += xv * mk.widen(wn[i])
			}
			dst[t*N+n] = s
		}
	}
}
