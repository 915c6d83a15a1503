package quantize

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/awq"
)

// TestClipMatchesTokenSum checks the Gram-matrix clipping search against
// the direct definition, mean over tokens of (x·Q(clamp(w)) − x·w)² per
// output and group, evaluated here in float64 token by token. The chosen
// bounds must be the same; the weights with an outlier per group make
// clipping pay off somewhere, so both outcomes are exercised.
func TestClipMatchesTokenSum(t *testing.T) {
	const N, K, G, T = 16, 64, 32, 40
	r := rand.New(rand.NewPCG(9, 9))
	w := make([]float32, N*K)
	for i := range w {
		w[i] = float32(r.NormFloat64())
		if r.IntN(40) == 0 {
			w[i] *= 8
		}
	}
	x := make([]float32, T*K)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	m := &mat{name: "test", W: slices.Clone(w), N: N, K: K}
	gr := newGram(x, T, K, G)
	// The Gram matrices themselves.
	for g := 0; g < K/G; g++ {
		for i := 0; i < G; i++ {
			for j := 0; j < G; j++ {
				var s float64
				for tk := 0; tk < T; tk++ {
					s += float64(x[tk*K+g*G+i]) * float64(x[tk*K+g*G+j])
				}
				if got := float64(gr.m[g*G*G+i*G+j]); math.Abs(got-s/T) > 1e-5*(1+math.Abs(s/T)) {
					t.Fatalf("gram[%d][%d][%d] = %v, want %v", g, i, j, got, s/T)
				}
			}
		}
	}
	if err := clip(m, gr); err != nil {
		t.Fatal(err)
	}
	clipped := 0
	for n := 0; n < N; n++ {
		for g := 0; g < K/G; g++ {
			row := w[n*K+g*G : n*K+(g+1)*G]
			m0 := awq.MaxAbs(row)
			best, bestErr := m0, math.Inf(1)
			for i := 0; i < awq.ClipSteps; i++ {
				b := m0 * awq.ClipShrink(i)
				q := make([]float32, G)
				awq.ClampGroup(q, row, b)
				if err := awq.FakeQuantizeGroup(q, q); err != nil {
					t.Fatal(err)
				}
				var e float64
				for tk := 0; tk < T; tk++ {
					var d float64
					for j := range q {
						d += float64(x[tk*K+g*G+j]) * (float64(q[j]) - float64(row[j]))
					}
					e += d * d
				}
				if e /= T; e < bestErr {
					best, bestErr = b, e
				}
			}
			if best < m0 {
				clipped++
			}
			got := awq.MaxAbs(m.W[n*K+g*G : n*K+(g+1)*G])
			if got != best {
				t.Errorf("output %d group %d: clamped to %v, direct search picks %v (max %v)", n, g, got, best, m0)
			}
		}
	}
	if clipped == 0 || clipped == N*K/G {
		t.Errorf("%d of %d groups clipped: the case does not exercise both outcomes", clipped, N*K/G)
	}
}
