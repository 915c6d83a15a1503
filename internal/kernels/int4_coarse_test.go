package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulInt4Coarse: with only the coarse int8 row, each output is
// within Σ_g max|x|·Σ|w|/254 of the float64 product (the step bound), and
// a row's result does not depend on how many rows share the call.
func TestMatMulInt4Coarse(t *testing.T) {
	defer SetThreads(Threads())
	forEachImpl(t, func(t *testing.T) {
		const K, N, group = 384, 72, 128
		r := rand.New(rand.NewPCG(4, 4))
		ac := newAWQCase(t, r, K, N, group, false)
		m := ac.repack(t)
		m.Coarse = true
		const T = 11
		x := randVec(r, T*K)
		x[3*K+7] *= 200
		for _, threads := range []int{1, 2} {
			SetThreads(threads)
			dst, check := guarded(t, T*N)
			MatMulInt4(dst, x, m, T)
			check()
			for ti := range T {
				one := make([]float32, N)
				MatMulInt4(one, x[ti*K:(ti+1)*K], m, 1)
				for n := range N {
					if math.Float32bits(one[n]) != math.Float32bits(dst[ti*N+n]) {
						t.Fatalf("threads=%d token %d output %d: %g alone, %g in a batch of %d", threads, ti, n, one[n], dst[ti*N+n], T)
					}
					var ref, mag, bound float64
					for g := range K / group {
						var amax, wabs float64
						for k := g * group; k < (g+1)*group; k++ {
							xv, wv := float64(x[ti*K+k]), float64(ac.w[n*K+k])
							ref += xv * wv
							mag += math.Abs(xv * wv)
							amax = math.Max(amax, math.Abs(xv))
							wabs += math.Abs(wv)
						}
						bound += amax * wabs / 254
					}
					if e := math.Abs(float64(dst[ti*N+n]) - ref); e > 1.01*bound+1e-6*mag {
						t.Fatalf("token %d output %d: %g, want %g within %g", ti, n, dst[ti*N+n], ref, bound)
					}
				}
			}
		}
	})
}
