package kernels

import (
	"encoding/binary"

	"github.com/streamguard/streamguard/internal/half"
)

// int4BlockGeneric computes one block of 16 outputs for one token.
func int4BlockGeneric(out []float32, m *Int4Matrix, b int, a []int8, d []float32, asum []int32) {
	tiles := m.Group / 8
	var facc [int4Block]float32
	for g := range m.groups {
		var isum [int4Block]int32
		base := (b*m.groups + g) * tiles * 64
		for ti := range tiles {
			tile := m.qs[base+ti*64 : base+ti*64+64]
			as := a[g*m.Group+ti*8 : g*m.Group+ti*8+8]
			for n := range int4Block {
				s := isum[n]
				for j := range 4 {
					v := tile[4*n+j]
					s += int32(v&15)*int32(as[j]) + int32(v>>4)*int32(as[4+j])
				}
				isum[n] = s
			}
		}
		rec := m.meta[(b*m.groups+g)*int4Meta:][:int4Meta]
		for n := range int4Block {
			f := float32(isum[n] - int32(rec[32+n])*asum[g])
			sd := half.F16ToF32(binary.LittleEndian.Uint16(rec[2*n:])) * d[g]
			facc[n] += f * sd
		}
	}
	copy(out, facc[:])
}

func int4GemvGeneric(dst []float32, m *Int4Matrix, b0, b1 int, acts *int4Acts, t int) {
	a, d, asum := acts.token(t)
	for b := b0; b < b1; b++ {
		int4BlockGeneric(dst[(b-b0)*int4Block:], m, b, a, d, asum)
	}
}

// int4GemmLoop is gemm4 (rows 4) or gemm2 (rows 2) as gemv calls, for
// implementations without multi-row kernels.
func int4GemmLoop(gemv func([]float32, *Int4Matrix, int, int, *int4Acts, int), rows int) func([]float32, int, *Int4Matrix, int, int, *int4Acts, int) {
	return func(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int) {
		for t := range rows {
			gemv(dst[t*ldd:], m, b0, b1, acts, t0+t)
		}
	}
}
