package gpu

import (
	"fmt"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
)

// awqRepacked is an AWQ projection in the layout matmul_awq reads: codes
// [N][K/8] (word w of row n holds k = 8w..8w+7, nibble i for k = 8w+i),
// scales and zs = zero·scale as float32 [N][K/group].
type awqRepacked struct {
	codes      []uint32
	scales, zs []float32
}

// repackAWQ turns AutoAWQ GEMM tensors (qweight [K][N/8], qzeros
// [K/group][N/8] or nil for zero point 8, scales [K/group][N] float16
// bits) into the GPU layout, rows in parallel.
func repackAWQ(qweight, qzeros []int32, scales []uint16, K, N, group int) (*awqRepacked, error) {
	if K <= 0 || N <= 0 || N%8 != 0 || group <= 0 || group%8 != 0 || K%group != 0 {
		return nil, fmt.Errorf("AWQ matrix %d×%d with group %d: need N and group multiples of 8, group dividing K", N, K, group)
	}
	words, G := N/8, K/group
	if len(qweight) != K*words || (qzeros != nil && len(qzeros) != G*words) || len(scales) != G*N {
		return nil, fmt.Errorf("AWQ tensors of %d, %d and %d values do not fit %d×%d with group %d", len(qweight), len(qzeros), len(scales), N, K, group)
	}
	r := &awqRepacked{codes: make([]uint32, N*K/8), scales: make([]float32, N*G), zs: make([]float32, N*G)}
	// Each word column c fills its own 8 rows.
	kernels.ParallelRange(words, 1, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			for k := range K {
				word := uint32(qweight[k*words+c])
				for i, j := range awq.PackOrder {
					n := 8*c + j
					r.codes[n*(K/8)+k/8] |= (word >> (4 * i) & 0xF) << (4 * (k % 8))
				}
			}
			for g := range G {
				for i, j := range awq.PackOrder {
					n := 8*c + j
					z := float32(8)
					if qzeros != nil {
						z = float32(uint32(qzeros[g*words+c]) >> (4 * i) & 0xF)
					}
					s := half.F16ToF32(scales[g*N+n])
					r.scales[n*G+g], r.zs[n*G+g] = s, z*s
				}
			}
		}
	})
	return r, nil
}
