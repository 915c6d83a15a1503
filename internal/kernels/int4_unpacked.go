package kernels

import "sync"

// int4UKernels is the prefill form of the INT4 product. Splitting nibbles
// inside the multiply loop costs the packed kernels about one vector
// instruction per three multiplies; instead, the codes of a pass's blocks
// (up to int4UPassBlocks) are unpacked to bytes once (unpack), and every
// row tile is multiplied with those bytes (gemm). The float steps per
// output are those of the packed kernels, so results are bitwise equal
// whichever path a row takes.
type int4UKernels struct {
	// unpack splits n consecutive 64-byte tiles of src into 64 bytes of
	// low nibbles and 64 of high nibbles at dst[i*dstride:].
	unpack func(dst []byte, dstride int, src []byte, n int)
	// prefetch asks for the cache lines of p (nil: none).
	prefetch func(p []byte)
	// gemm adds groups [0, groups) of the product of rtiles tiles of rows
	// (4 or 2) activation rows and nb (4, 2 or 1) unpacked blocks to facc,
	// rows at stride fstride: facc = fma(s·d, float32(Σq·a) − z·A, facc)
	// per group. Tile r's activations start at a[r·rows·K:], its steps and
	// sums at d[r·rows·G:] and af[r·rows·G:]. One call covers all tiles, so
	// the cost of a call is paid once per pass and block tile, not per row
	// tile.
	gemm func(rows, nb int, facc []float32, fstride int, u, meta []byte, mstride int, a []int8, d, af []float32, groups, tiles, rtiles, K, G int)
	// addRows sets dst[t*ldd+i] = a[t*lda+i] + b[t*lda+i] for t < rows,
	// i < width (a multiple of 16): a scalar loop would cost as much as a
	// tenth of the product.
	addRows func(dst []float32, ldd int, a, b []float32, lda, rows, width int)
}

// int4UMinRows is the fewest rows for which unpacking pays: the unpacked
// codes of a pass then serve at least 16 row tiles. Below it the packed
// kernels, which split nibbles in the multiply loop but unpack nothing,
// were faster: a 1024×6144 product at 8 tokens (16 rows in exact mode)
// 0.75× the unpacked time, at 16 tokens 0.78–0.84×, even at 32, faster
// from 64 (measured alternately in one process). A variable so that tests
// can send few rows through the unpacked kernels.
var int4UMinRows = 64

const (
	// int4UMaxGroup is the largest group for which the float epilogue of
	// the unpacked kernels is exact (integers below 2^24).
	int4UMaxGroup = 4096
)

// int4UChunkBytes bounds the unpacked codes of one block tile over one
// chunk of K: they stay in a 32 or 48 KiB L1 data cache, beside a row
// tile's activations and sums, while every row tile uses them in turn.
// Sized for L2 (256 KiB) instead, the same products ran 5–10% slower. A pass
// covers int4UChunkBytes/(16·K) blocks, at least 4 and at most
// int4UPassBlocks: more than 4 only for short rows (K below 384).
// Variables so tests can force narrow passes and several passes over K.
var (
	int4UChunkBytes = 24 << 10
	int4UPassBlocks = 16
)

type int4UScratch struct {
	u    []byte
	facc []float32
}

var int4UPool sync.Pool

// int4RowsU computes the full output blocks [lo, hi) of all T tokens (R
// activation rows: T, or 2T with the residual rows T..2T-1) into dst,
// adding each token's two rows in exact mode.
func int4RowsU(ik *int4Kernels, dst []float32, w *Int4Matrix, acts *int4Acts, T, R, lo, hi int) {
	uk := ik.unpacked
	sc, _ := int4UPool.Get().(*int4UScratch)
	if sc == nil {
		sc = new(int4UScratch)
	}
	defer int4UPool.Put(sc)
	N, G, group := w.N, w.groups, w.Group
	tiles := group / 8
	for b0 := lo; b0 < hi; {
		// Blocks in this pass: whole tiles of 4 while they last, then 2, 1.
		nbc := min(hi-b0, max(4, int4UChunkBytes/(16*w.K)), int4UPassBlocks)
		if nbc >= 4 {
			nbc &^= 3
		} else if nbc == 3 {
			nbc = 2
		}
		nb := min(4, nbc) // blocks per tile
		width := nbc * int4Block
		kc := min(G, max(1, int4UChunkBytes/(nbc*16*group))) // groups per pass
		sub := kc * tiles * nb * 128                         // unpacked bytes of one tile's blocks
		sc.u = grow(sc.u, nbc/nb*sub)
		sc.facc = grow(sc.facc, R*width)
		u, facc := sc.u, sc.facc
		clear(facc)
		for g0 := 0; g0 < G; g0 += kc {
			g1 := min(G, g0+kc)
			for b := range nbc {
				src := w.qs[((b0+b)*G+g0)*tiles*64:]
				uk.unpack(u[b/nb*sub+b%nb*128:], nb*128, src, (g1-g0)*tiles)
			}
			if uk.prefetch != nil {
				// The next pass's codes: the following groups of these
				// blocks, or the first groups of the next blocks.
				nb0, ng0 := b0, g1
				if g1 == G {
					nb0, ng0 = b0+nbc, 0
				}
				ng1 := min(G, ng0+kc)
				for b := nb0; b < min(hi, nb0+nbc); b++ {
					uk.prefetch(w.qs[(b*G+ng0)*tiles*64 : (b*G+ng1)*tiles*64])
				}
			}
			// Every row tile in turn uses one block tile's codes while they
			// are in cache; a final pair of rows is a tile of 2.
			R4 := R &^ 3
			for j := 0; j < nbc; j += nb {
				meta := w.meta[((b0+j)*G+g0)*int4Meta:]
				fj, uj := facc[j*int4Block:], u[j/nb*sub:]
				if R4 > 0 {
					uk.gemm(4, nb, fj, width, uj, meta, G*int4Meta, acts.a4[4*g0*group:], acts.d4[4*g0:], acts.af4[4*g0:], g1-g0, tiles, R4/4, w.K, G)
				}
				if t0 := R4; R-t0 >= 2 {
					uk.gemm(2, nb, fj[t0*width:], width, uj, meta, G*int4Meta, acts.a4[t0*w.K+2*g0*group:], acts.d4[t0*G+2*g0:], acts.af4[t0*G+2*g0:], g1-g0, tiles, 1, w.K, G)
				}
			}
		}
		n0 := b0 * int4Block
		if R == T {
			for t := range T {
				copy(dst[t*N+n0:t*N+n0+width], facc[t*width:])
			}
		} else {
			uk.addRows(dst[n0:], N, facc, facc[T*width:], width, T, width)
		}
		if R%2 == 1 {
			// The last row of an odd count (coarse mode) is in no tile.
			t := R - 1
			ik.gemv(dst[t*N+n0:t*N+n0+width], w, b0, b0+nbc, acts, t)
		}
		b0 += nbc
	}
}
