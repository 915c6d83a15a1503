package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// quantCase is one token of activations for the quantizer tests.
func quantCases(r *rand.Rand, group int) map[string][]float32 {
	n := 4 * group
	c := map[string][]float32{}
	c["normal"] = randVec(r, n)
	z := randVec(r, n)
	clear(z[group : 2*group]) // one all-zero group
	c["zero group"] = z
	nan := randVec(r, n)
	nan[group+3] = float32(math.NaN())
	c["nan"] = nan
	inf := randVec(r, n)
	inf[2*group+1] = float32(math.Inf(-1))
	c["inf"] = inf
	// Ties: amax 127 makes the step 1, so x.5 must round to even.
	tie := make([]float32, n)
	for i := range tie {
		tie[i] = float32(i%9) - 4.5
	}
	tie[0], tie[group], tie[2*group], tie[3*group] = 127, -127, 127, 127
	c["ties"] = tie
	tiny := randVec(r, n)
	for i := range tiny {
		tiny[i] *= 1e-41 // subnormal
	}
	c["subnormal"] = tiny
	big := randVec(r, n)
	for i := range big {
		big[i] *= 1e30
	}
	c["huge"] = big
	out := randVec(r, n)
	out[7] *= 1e4
	c["outlier"] = out
	return c
}

// TestInt4QuantMatchesGeneric: every implementation's quantizer writes the
// same codes, steps and sums as the Go reference, bit for bit.
func TestInt4QuantMatchesGeneric(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		q := active.int4.quant
		for _, group := range []int{32, 64, 128, 8} {
			r := rand.New(rand.NewPCG(uint64(group), 11))
			for name, x := range quantCases(r, group) {
				G := len(x) / group
				type out struct {
					a, a2 []int8
					d, d2 []float32
					s, s2 []int32
				}
				run := func(f int4Quant) out {
					o := out{make([]int8, len(x)), make([]int8, len(x)), make([]float32, G), make([]float32, G), make([]int32, G), make([]int32, G)}
					f(x, o.a, o.a2, o.d, o.d2, o.s, o.s2, group)
					return o
				}
				got, want := run(q), run(int4QuantGeneric)
				for i := range x {
					if got.a[i] != want.a[i] || got.a2[i] != want.a2[i] {
						t.Fatalf("group %d %s: codes[%d] = %d,%d want %d,%d", group, name, i, got.a[i], got.a2[i], want.a[i], want.a2[i])
					}
				}
				for g := range G {
					if math.Float32bits(got.d[g]) != math.Float32bits(want.d[g]) || math.Float32bits(got.d2[g]) != math.Float32bits(want.d2[g]) || got.s[g] != want.s[g] || got.s2[g] != want.s2[g] {
						t.Fatalf("group %d %s: group %d steps %g,%g sums %d,%d; want %g,%g %d,%d", group, name, g, got.d[g], got.d2[g], got.s[g], got.s2[g], want.d[g], want.d2[g], want.s[g], want.s2[g])
					}
				}
			}
		}
	})
}

// TestInt4QuantReconstructs checks the reference quantizer's promise: a·d +
// a2·d2 is within amax/(2·127·254) (plus float rounding) of x, ties round
// to even, bad groups are zero codes with NaN steps, and groups below
// int4TinyGroup (here the subnormal case) are zero.
func TestInt4QuantReconstructs(t *testing.T) {
	const group = 32
	r := rand.New(rand.NewPCG(2, 2))
	for name, x := range quantCases(r, group) {
		G := len(x) / group
		a, a2 := make([]int8, len(x)), make([]int8, len(x))
		d, d2 := make([]float32, G), make([]float32, G)
		s, s2 := make([]int32, G), make([]int32, G)
		int4QuantGeneric(x, a, a2, d, d2, s, s2, group)
		for g := range G {
			xs := x[g*group : (g+1)*group]
			var amax float64
			bad := false
			for _, v := range xs {
				amax = math.Max(amax, math.Abs(float64(v)))
				bad = bad || math.IsNaN(float64(v)) || math.IsInf(float64(v), 0)
			}
			var sum, sum2 int32
			for k := range xs {
				i := g*group + k
				sum, sum2 = sum+int32(a[i]), sum2+int32(a2[i])
				if bad || amax < int4TinyGroup {
					if a[i] != 0 || a2[i] != 0 {
						t.Fatalf("%s: non-finite or tiny group %d has codes", name, g)
					}
					continue
				}
				rec := float64(a[i])*float64(d[g]) + float64(a2[i])*float64(d2[g])
				if e := math.Abs(rec - float64(xs[k])); e > amax*(1/(2*127*254.0)+1e-6) {
					t.Fatalf("%s: x[%d] = %g reconstructed as %g (error %.3g of amax %g)", name, i, xs[k], rec, e/amax, amax)
				}
			}
			if bad != math.IsNaN(float64(d[g])) || sum != s[g] || sum2 != s2[g] {
				t.Fatalf("%s: group %d: step %g (bad %v), sums %d,%d want %d,%d", name, g, d[g], bad, s[g], s2[g], sum, sum2)
			}
		}
	}
	// Half to even on the coarse codes: amax 127 gives step 1.
	x := []float32{127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5}
	a, a2 := make([]int8, 8), make([]int8, 8)
	d, d2, s, s2 := make([]float32, 1), make([]float32, 1), make([]int32, 1), make([]int32, 1)
	int4QuantGeneric(x, a, a2, d, d2, s, s2, 8)
	want := []int8{127, 0, 2, 2, 0, -2, -2, 4}
	for i := range want {
		if a[i] != want[i] {
			t.Fatalf("coarse codes %v, want %v", a, want)
		}
	}
}
