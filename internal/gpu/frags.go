package gpu

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/awq"
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

// awqFragsFromSource lays out AutoAWQ GEMM tensors (qweight [K][N/8],
// qzeros [K/group][N/8] or nil for zero point 8, scales [K/group][N]
// float16 bits) for the tensor cores: for n-tile nt, stage kb, lane l, 4
// words, word ch holding for j < 4 the code of (row 8nt + l/4, k) in
// nibble j and of (row, k+1) in nibble j+4, at k = 128kb + 32ch + 8j +
// 2(l%4) (fragK(kb, 2j, l%4) + 32ch); the scales as stored (float16,
// exact) [K/group][N]; −(128 + zero) as a bf16 [K/group][N] (the kernel
// adds it to the bf16 of 128 + code). An n-tile of 8 rows is exactly one
// word column of qweight (its nibbles in awq.PackOrder), so each word
// takes its 8 codes from 8 words of that column.
func awqFragsFromSource(qweight, qzeros []int32, scales []uint16, K, N, group int) (w []uint32, sc, neg []uint16, err error) {
	if !mmaFits(N, K, group) {
		return nil, nil, nil, fmt.Errorf("AWQ matrix %d×%d with group %d does not fit the tensor-core tiles", N, K, group)
	}
	words, G := N/8, K/group
	if len(qweight) != K*words || (qzeros != nil && len(qzeros) != G*words) || len(scales) != G*N {
		return nil, nil, nil, fmt.Errorf("AWQ tensors of %d, %d and %d values do not fit %d×%d with group %d", len(qweight), len(qzeros), len(scales), N, K, group)
	}
	stages := K / mmaStage
	w = make([]uint32, N*K/8)
	kernels.ParallelRange(words, 1, func(lo, hi int) {
		var col [32]uint32 // a 32-k chunk of one word column
		for kb := range stages {
			for ch := range 4 {
				k0 := kb*mmaStage + 32*ch
				for nt := lo; nt < hi; nt++ {
					for i := range col {
						col[i] = uint32(qweight[(k0+i)*words+nt])
					}
					for l := range 32 {
						g, c := l/4, l%4
						sh := 4 * awq.ReverseOrder[g]
						var word uint32
						for j := range 4 {
							k := 8*j + 2*c
							word |= (col[k]>>sh&0xF)<<(4*j) | (col[k+1]>>sh&0xF)<<(4*(j+4))
						}
						w[((nt*stages+kb)*32+l)*4+ch] = word
					}
				}
			}
		}
	})
	sc, neg = make([]uint16, G*N), make([]uint16, G*N)
	copy(sc, scales)
	for g := range G {
		for n := range N {
			z := uint16(8)
			if qzeros != nil {
				z = uint16(uint32(qzeros[g*words+n/8]) >> (4 * awq.ReverseOrder[n%8]) & 0xF)
			}
			neg[g*N+n] = 0xC300 | z // the bf16 of −(128 + zero)
		}
	}
	return w, sc, neg, nil
}

// stackFrags stacks the rows of projections of the same input in the
// tensor-core layout: the n-tile-major codes appended, the group-major
// scales and zero points interleaved group by group.
func stackFrags(ws [][]uint32, scs, negs [][]uint16, Ns []int, G int) (w []uint32, sc, neg []uint16) {
	N := 0
	for i, p := range ws {
		w = append(w, p...)
		N += Ns[i]
	}
	sc, neg = make([]uint16, 0, G*N), make([]uint16, 0, G*N)
	for g := range G {
		for i, n := range Ns {
			sc = append(sc, scs[i][g*n:(g+1)*n]...)
			neg = append(neg, negs[i][g*n:(g+1)*n]...)
		}
	}
	return w, sc, neg
}
