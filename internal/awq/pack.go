// Package awq handles AWQ INT4 checkpoints in the AutoAWQ GEMM layout: nibble
// packing of qweight/qzeros and dequantization back to nn.Linear weights.
package awq

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/half"
)

// PackOrder is the GEMM nibble order: bits 4i..4i+3 of packed word c hold
// output column 8c+PackOrder[i].
var PackOrder = [8]int{0, 2, 4, 6, 1, 3, 5, 7}

// ReverseOrder is the inverse of PackOrder: output column 8c+j sits in
// nibble ReverseOrder[j] of word c.
var ReverseOrder = [8]int{0, 4, 1, 5, 2, 6, 3, 7}

// Word is the storage type of a packed tensor. Checkpoints declare I32, but the
// bits are unsigned nibbles, so both views are accepted.
type Word interface{ ~int32 | ~uint32 }

// Pack packs rows×cols 4-bit codes (row-major, each 0..15) into rows×cols/8
// words in GEMM order. It serves qweight ([K, N] codes) and qzeros ([K/G, N]).
func Pack(codes []uint8, rows, cols int) ([]uint32, error) {
	if err := checkDims(len(codes), rows, cols, 1); err != nil {
		return nil, err
	}
	w := cols / 8
	out := make([]uint32, rows*w)
	for r := 0; r < rows; r++ {
		src := codes[r*cols : (r+1)*cols]
		for c := 0; c < w; c++ {
			var word uint32
			for i, col := range PackOrder {
				q := src[8*c+col]
				if q > 15 {
					return nil, fmt.Errorf("awq: code %d at row %d column %d does not fit in 4 bits", q, r, 8*c+col)
				}
				word |= uint32(q) << (4 * i)
			}
			out[r*w+c] = word
		}
	}
	return out, nil
}

// Unpack is the inverse of Pack: rows×cols/8 words to rows×cols codes.
func Unpack[T Word](packed []T, rows, cols int) ([]uint8, error) {
	if err := checkDims(len(packed), rows, cols, 8); err != nil {
		return nil, err
	}
	w := cols / 8
	out := make([]uint8, rows*cols)
	for r := 0; r < rows; r++ {
		for c := 0; c < w; c++ {
			word := uint32(packed[r*w+c])
			dst := out[r*cols+8*c : r*cols+8*c+8]
			for j := range dst {
				dst[j] = uint8(word>>(4*ReverseOrder[j])) & 0xF
			}
		}
	}
	return out, nil
}

// checkDims validates a rows×cols matrix stored with perElem columns per
// element (1 for codes, 8 for packed words).
func checkDims(n, rows, cols, perElem int) error {
	if rows <= 0 || cols <= 0 {
		return fmt.Errorf("awq: matrix %d×%d must have positive dimensions", rows, cols)
	}
	if cols%8 != 0 {
		return fmt.Errorf("awq: %d columns is not a multiple of 8", cols)
	}
	if n != rows*cols/perElem {
		return fmt.Errorf("awq: %d×%d matrix needs %d elements, got %d", rows, cols, rows*cols/perElem, n)
	}
	return nil
}

// Dequantize expands one GEMM-packed Linear with K inputs and N outputs to
// its float weight in nn.Linear layout, W[n*K+k] = (q[k][n] - z[k/group][n]) *
// s[k/group][n]. qweight is [K, N/8], qzeros [K/group, N/8], scales [K/group, N]
// as fp16 bits. The product is computed in float32 (the reference rounds it
// to fp16; float32 is at least as accurate).
func Dequantize[T Word](qweight, qzeros []T, scales []uint16, K, N, group int) ([]float32, error) {
	w := make([]float32, N*K)
	if err := DequantizeInto(w, qweight, qzeros, scales, K, N, group); err != nil {
		return nil, err
	}
	return w, nil
}

// DequantizeInto is Dequantize writing into dst (len N*K).
func DequantizeInto[T Word](dst []float32, qweight, qzeros []T, scales []uint16, K, N, group int) error {
	if group <= 0 || K <= 0 || K%group != 0 {
		return fmt.Errorf("awq: group size %d does not divide in_features %d", group, K)
	}
	if err := checkDims(len(qweight), K, N, 8); err != nil {
		return fmt.Errorf("qweight: %w", err)
	}
	groups := K / group
	if err := checkDims(len(qzeros), groups, N, 8); err != nil {
		return fmt.Errorf("qzeros: %w", err)
	}
	if len(scales) != groups*N {
		return fmt.Errorf("awq: scales: [%d, %d] needs %d elements, got %d", groups, N, groups*N, len(scales))
	}
	if len(dst) != N*K {
		return fmt.Errorf("awq: destination holds %d values, want %d", len(dst), N*K)
	}
	words := N / 8
	// Zeros and scales widened once; then one 8-output column strip at a
	// time, so the 8 destination rows are written sequentially.
	z := make([]float32, groups*N)
	s := make([]float32, groups*N)
	half.F16SliceToF32(s, scales)
	for g := 0; g < groups; g++ {
		for c := 0; c < words; c++ {
			word := uint32(qzeros[g*words+c])
			for j := 0; j < 8; j++ {
				z[g*N+8*c+j] = float32((word >> (4 * ReverseOrder[j])) & 0xF)
			}
		}
	}
	var rows [8][]float32
	for c := 0; c < words; c++ {
		for j := range rows {
			rows[j] = dst[(8*c+j)*K : (8*c+j+1)*K]
		}
		for k := 0; k < K; k++ {
			word := uint32(qweight[k*words+c])
			base := (k/group)*N + 8*c
			zs, ss := z[base:base+8], s[base:base+8]
			for j := 0; j < 8; j++ {
				q := float32((word >> (4 * ReverseOrder[j])) & 0xF)
				rows[j][k] = (q - zs[j]) * ss[j]
			}
		}
	}
	return nil
}
