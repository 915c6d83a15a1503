package quantize

import (
	"fmt"
	"math"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/kernels"
)

// gram holds, for each input group of a Linear's input, the second-moment
// matrix of the activations, Σ_t x_t x_tᵀ / T over the group's inputs
// ([K/G][G][G]).
type gram struct {
	G, groups int
	m         []float32
}

// newGram computes the per-group second moments of x [T][K].
func newGram(x []float32, T, K, G int) *gram {
	gr := &gram{G: G, groups: K / G, m: make([]float32, K*G)}
	xt := make([]float32, G*T)
	for g := 0; g < gr.groups; g++ {
		// Transpose the group's columns so the product is one matmul:
		// M[i][j] = Σ_t xt[i][t]·xt[j][t].
		kernels.ParallelRange(T, 1, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				row := x[t*K+g*G : t*K+(g+1)*G]
				for i, v := range row {
					xt[i*T+t] = v
				}
			}
		})
		m := gr.m[g*G*G : (g+1)*G*G]
		kernels.MatMulF32(m, xt, xt, G, T, G)
		inv := 1 / float32(T)
		for i := range m {
			m[i] *= inv
		}
	}
	return gr
}

// clip runs the clipping search on m (already scaled) with the input
// statistics gr and clamps its weights in place: for every output and
// input group it tries max|w|·(1 − i/20), i < 10, as the clamp bound and
// keeps the one whose quantized group minimises the mean squared output
// error over the calibration tokens, mean_t (x_t·(Q(clamp(w)) − w))² =
// Δwᵀ·M·Δw. The Gram form gives the same numbers as summing over tokens,
// at a cost that does not grow with the number of tokens.
func clip(m *mat, gr *gram) error {
	N, K, G := m.N, m.K, gr.G
	wg := make([]float32, N*G)
	d := make([]float32, N*G)
	p := make([]float32, N*G)
	m0 := make([]float32, N)
	mxs, mns := make([]float32, N), make([]float32, N)
	best := make([]float32, N)
	bestErr := make([]float64, N)
	for g := 0; g < K/G; g++ {
		var fail firstError
		kernels.ParallelRange(N, 1, func(lo, hi int) {
			for n := lo; n < hi; n++ {
				row := wg[n*G : (n+1)*G]
				copy(row, m.W[n*K+g*G:n*K+(g+1)*G])
				mx, mn, err := awq.GroupRange(row)
				if err != nil {
					fail.set(fmt.Errorf("%s: output %d: %w", m.name, n, err))
					return
				}
				mxs[n], mns[n], m0[n] = mx, mn, max(mx, -mn)
				best[n], bestErr[n] = m0[n], math.Inf(1)
			}
		})
		if err := fail.get(); err != nil {
			return err
		}
		mg := gr.m[g*G*G : (g+1)*G*G]
		for i := 0; i < awq.ClipSteps; i++ {
			shrink := awq.ClipShrink(i)
			kernels.ParallelRange(N, 1, func(lo, hi int) {
				for n := lo; n < hi; n++ {
					row, dr := wg[n*G:(n+1)*G], d[n*G:(n+1)*G]
					if err := awq.ClipDelta(dr, row, mxs[n], mns[n], m0[n]*shrink); err != nil {
						fail.set(fmt.Errorf("%s: output %d, inputs %d..%d: %w", m.name, n, g*G, (g+1)*G-1, err))
						return
					}
				}
			})
			if err := fail.get(); err != nil {
				return err
			}
			kernels.MatMulF32(p, d, mg, N, G, G)
			kernels.ParallelRange(N, 1, func(lo, hi int) {
				for n := lo; n < hi; n++ {
					var e float64
					pr, dr := p[n*G:(n+1)*G], d[n*G:(n+1)*G]
					for j := range pr {
						e += float64(pr[j]) * float64(dr[j])
					}
					if e < bestErr[n] {
						bestErr[n], best[n] = e, m0[n]*shrink
					}
				}
			})
		}
		kernels.ParallelRange(N, 1, func(lo, hi int) {
			for n := lo; n < hi; n++ {
				row := m.W[n*K+g*G : n*K+(g+1)*G]
				awq.ClampGroup(row, row, best[n])
			}
		})
	}
	return nil
}
