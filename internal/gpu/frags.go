package gpu

import (
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
)

// The weight layouts of the tensor-core products (mma.cuh, which describes
// them): each lane of a warp loads, contiguously with its neighbours,
// exactly the registers it gives the mma instruction.

const (
	mmaStage = 128 // k's per stage (MMA_KB)
	mmaWarps = 4   // warps per block (MMA_WARPS)
	// mmaTallTiles is the most tokens a step computes with 16-token tiles
	// (one n-tile per warp, so four times the blocks of the 64-token
	// tiles): below it a step has too few rows to fill the GPU with tall
	// tiles, and its weights are read again per 16 rows from the L2 cache.
	mmaTallTiles = 64
	// mmaSkinny is the most tokens the skinny kernels take (one 16-row
	// tile): decode steps, whose products must run at the memory's pace.
	mmaSkinny = 16
)

// mmaFits reports whether an N×K projection (AWQ: with group) can take the
// tensor-core products: whole n-tiles of 8 rows, whole stages, and groups
// of whole 32-k chunks. The others (the heads' few-column outputs) keep
// the one-warp-per-row kernels.
func mmaFits(N, K, group int) bool {
	return N%8 == 0 && K%mmaStage == 0 && K > 0 && N > 0 && (group == 0 || group%32 == 0 && K%group == 0)
}

// fragK is the k of register word j (0..15) of lane c = l%4 in stage kb:
// pairs (k, k+1) at k = 128kb + 16(j/2) + 8(j%2) + 2c.
func fragK(kb, j, c int) int { return kb*mmaStage + 16*(j/2) + 8*(j%2) + 2*c }

// bf16Frags lays out a bf16 matrix [N][K]: for n-tile nt, stage kb, lane
// l, 16 words, word j the pair (k, k+1) of row 8nt + l/4 at fragK(kb, j,
// l%4), low half first.
func bf16Frags(w []uint16, N, K int) []uint32 {
	stages := K / mmaStage
	out := make([]uint32, N*K/2)
	kernels.ParallelRange(N/8, 1, func(lo, hi int) {
		for nt := lo; nt < hi; nt++ {
			for kb := range stages {
				for l := range 32 {
					row := w[(8*nt+l/4)*K:]
					dst := out[((nt*stages+kb)*32+l)*16:]
					for j := range 16 {
						k := fragK(kb, j, l%4)
						dst[j] = uint32(row[k]) | uint32(row[k+1])<<16
					}
				}
			}
		}
	})
	return out
}

// awqFrags lays out the 4-bit codes of r (N×K, group): for n-tile nt,
// stage kb, lane l, 4 words, word ch holding for j < 4 the code of (row
// 8nt + l/4, k) in nibble j and of (row, k+1) in nibble j+4, at k =
// fragK(kb, j, l%4) + 32ch. Also the scales as float16 (as AutoAWQ stores
// them: exact) [K/group][N] and −(128 + zero) as a bf16 [K/group][N] (the
// kernel adds it to the bf16 of 128 + code).
func awqFrags(r *awqRepacked, N, K, group int) (w []uint32, scales, neg []uint16) {
	stages, G := K/mmaStage, K/group
	w = make([]uint32, N*K/8)
	kernels.ParallelRange(N/8, 1, func(lo, hi int) {
		for nt := lo; nt < hi; nt++ {
			for kb := range stages {
				for l := range 32 {
					n, c := 8*nt+l/4, l%4
					dst := w[((nt*stages+kb)*32+l)*4:]
					for ch := range 4 {
						// The k's of word ch are 2c and 2c+1 of each of four
						// consecutive groups of 8 (fragK): byte c of each of
						// the row's four code words there, low nibble to
						// nibble j, high nibble to j+4.
						src := r.codes[n*(K/8)+(kb*mmaStage+32*ch)/8:][:4]
						var word uint32
						for j, v := range src {
							b := v >> (8 * c) & 0xFF
							word |= (b&0xF)<<(4*j) | (b>>4)<<(4*(j+4))
						}
						dst[ch] = word
					}
				}
			}
		}
	})
	scales, neg = make([]uint16, G*N), make([]uint16, G*N)
	for n := range N {
		for g := range G {
			scales[g*N+n] = half.F32ToF16(r.scales[n*G+g])
			neg[g*N+n] = 0xC300 | uint16(r.zeros[n*G+g]) // the bf16 of −(128 + zero)
		}
	}
	return w, scales, neg
}
