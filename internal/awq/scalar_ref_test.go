package awq

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// The scalar loops QuantizeScaledRows, groupRange and ClipDelta ran before
// they moved to package kernels, kept verbatim as the reference every CPU
// path must reproduce bit for bit.

func groupRangeScalar(v []float32) (mx, mn float32, err error) {
	mx, mn = v[0], v[0]
	var nan uint32
	for _, x := range v {
		if x > mx {
			mx = x
		}
		if x < mn {
			mn = x
		}
		nan |= (0x7f800000 - math.Float32bits(x)&0x7fffffff) >> 31
	}
	if nan != 0 {
		return 0, 0, fmt.Errorf("weights hold NaN")
	}
	return mx, mn, nil
}

func scaledRangeScalar(dst, v, s []float32) (mx, mn float32, err error) {
	dst, s = dst[:len(v)], s[:len(v)]
	mx, mn = v[0]*s[0], v[0]*s[0]
	var nan uint32
	for i, x := range v {
		y := x * s[i]
		dst[i] = y
		if y > mx {
			mx = y
		}
		if y < mn {
			mn = y
		}
		nan |= (0x7f800000 - math.Float32bits(y)&0x7fffffff) >> 31
	}
	if nan != 0 {
		return 0, 0, fmt.Errorf("weights hold NaN")
	}
	return mx, mn, nil
}

func (p *Packed) quantizeScaledRowsScalar(w, s []float32, n0, n1 int) error {
	K, N, G := p.K, p.N, p.Group
	words, groups := N/8, K/G
	acc := make([]uint32, K)
	zacc := make([]uint32, groups)
	tmp := make([]float32, G)
	for nb := n0; nb < n1; nb += 8 {
		clear(acc)
		clear(zacc)
		for j := 0; j < 8; j++ {
			n := nb + j
			shift := uint(4 * ReverseOrder[j])
			row := w[n*K : (n+1)*K]
			for g := 0; g < groups; g++ {
				v := row[g*G : (g+1)*G]
				var mx, mn float32
				var err error
				if s != nil {
					mx, mn, err = scaledRangeScalar(tmp, v, s[g*G:(g+1)*G])
					v = tmp
				} else {
					mx, mn, err = groupRangeScalar(v)
				}
				if err == nil {
					var sc uint16
					var sf float32
					if sc, sf, err = groupScale(mx, mn); err == nil {
						z := zeroPoint(mn, sf)
						a := acc[g*G : (g+1)*G]
						a = a[:len(v)]
						for i, x := range v {
							a[i] |= uint32(clampCode(roundEven(x/sf)+z)) << shift
						}
						p.Scales[g*N+n] = sc
						zacc[g] |= uint32(z) << shift
					}
				}
				if err != nil {
					return fmt.Errorf("awq: output %d, inputs %d..%d: %w", n, g*G, (g+1)*G-1, err)
				}
			}
		}
		c := nb / 8
		for k, v := range acc {
			p.QWeight[k*words+c] = int32(v)
		}
		for g, v := range zacc {
			p.QZeros[g*words+c] = int32(v)
		}
	}
	return nil
}

func clipDeltaScalar(dst, v []float32, mx, mn, bound float32) error {
	hi, lo := min(mx, bound), max(mn, -bound)
	_, sf, err := groupScale(hi, lo)
	if err != nil {
		return err
	}
	z := zeroPoint(lo, sf)
	dst = dst[:len(v)]
	for j, x := range v {
		c := x
		if c > bound {
			c = bound
		}
		if c < -bound {
			c = -bound
		}
		dst[j] = (clampCode(roundEven(c/sf)+z)-z)*sf - x
	}
	return nil
}

// scalarTestWeights draws an N×K weight: normal values, whole groups of
// signed zeros or of one sign with zeros (zero extremes), weights on exact
// ties of a scale step, and a few huge and subnormal values.
func scalarTestWeights(r *rand.Rand, N, K, G int) []float32 {
	w := make([]float32, N*K)
	negZero := float32(math.Copysign(0, -1))
	for o := 0; o < len(w); o += G {
		kind := r.IntN(6)
		for i := o; i < o+G; i++ {
			x := float32(r.NormFloat64())
			switch kind {
			case 1:
				x = -float32(math.Abs(float64(x)))
				if r.IntN(3) == 0 {
					x = [2]float32{0, negZero}[r.IntN(2)]
				}
			case 2:
				x = [2]float32{0, negZero}[r.IntN(2)]
			case 3:
				x = (float32(r.IntN(16)-8) + 0.5) / 8 // ties for power-of-two steps
			case 4:
				x *= 1e-39
			case 5:
				if r.IntN(20) == 0 {
					x *= 1e4
				}
			}
			w[i] = x
		}
	}
	return w
}

// TestQuantizeScaledRowsMatchesScalar: the kernels path packs the same
// words, zero points and scales as the scalar loop, with and without input
// scales, for groups that are and are not multiples of the 16-lane vectors,
// over several store batches and inner output ranges, and fails the same
// way (leaving the same words behind) on NaN and on ranges no fp16 scale
// holds.
func TestQuantizeScaledRowsMatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, sh := range []struct{ N, K, G int }{{16, 256, 128}, {8, 120, 40}, {24, 96, 32}, {8, 21, 7}, {8, 64, 64}, {264, 64, 32}} {
		for rep := range 6 {
			w := scalarTestWeights(r, sh.N, sh.K, sh.G)
			s := make([]float32, sh.K)
			for i := range s {
				s[i] = float32(math.Exp(r.NormFloat64()))
				if rep == 1 {
					s[i] = 1
				}
			}
			switch rep {
			case 4:
				w[r.IntN(len(w))] = float32(math.NaN())
			case 5:
				i := r.IntN(len(w)/sh.G) * sh.G // one group's range has no fp16 scale
				w[i], w[i+1] = 1e8, -1e8
			}
			for _, sc := range [][]float32{nil, s} {
				a, _ := NewPacked(sh.K, sh.N, sh.G)
				b, _ := NewPacked(sh.K, sh.N, sh.G)
				errA := a.QuantizeScaledRows(w, sc, 0, sh.N)
				errB := b.quantizeScaledRowsScalar(w, sc, 0, sh.N)
				if fmt.Sprint(errA) != fmt.Sprint(errB) || (errA != nil) != (rep >= 4) {
					t.Fatalf("%v rep %d: error %v, scalar %v", sh, rep, errA, errB)
				}
				if sh.N >= 24 { // an inner range: batches that start and end mid-tensor
					errA = a.QuantizeScaledRows(w, sc, 8, sh.N-8)
					errB = b.quantizeScaledRowsScalar(w, sc, 8, sh.N-8)
					if fmt.Sprint(errA) != fmt.Sprint(errB) {
						t.Fatalf("%v rep %d: inner range error %v, scalar %v", sh, rep, errA, errB)
					}
				}
				if !slices.Equal(a.QWeight, b.QWeight) || !slices.Equal(a.QZeros, b.QZeros) || !slices.Equal(a.Scales, b.Scales) {
					t.Fatalf("%v rep %d (scaled %v): packed tensors differ from the scalar loop", sh, rep, sc != nil)
				}
			}
		}
	}
}

// TestClipDeltaMatchesScalar: ClipDelta equals the scalar loop bit for bit
// at every shrink step, group size and data kind.
func TestClipDeltaMatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for _, G := range []int{7, 16, 32, 40, 128, 129} {
		w := scalarTestWeights(r, 8, 4*G, G)
		for o := 0; o < len(w); o += G {
			v := w[o : o+G]
			mx, mn, err := groupRangeScalar(v)
			if err != nil {
				t.Fatal(err)
			}
			gmx, gmn, _ := GroupRange(v)
			if math.Float32bits(gmx) != math.Float32bits(mx) || math.Float32bits(gmn) != math.Float32bits(mn) {
				t.Fatalf("G=%d: GroupRange = [%g, %g], scalar [%g, %g]", G, gmn, gmx, mn, mx)
			}
			m0 := max(mx, -mn)
			for i := range ClipSteps {
				b := m0 * ClipShrink(i)
				got, want := make([]float32, G), make([]float32, G)
				errA := ClipDelta(got, v, mx, mn, b)
				errB := clipDeltaScalar(want, v, mx, mn, b)
				if fmt.Sprint(errA) != fmt.Sprint(errB) {
					t.Fatalf("G=%d step %d: error %v, scalar %v", G, i, errA, errB)
				}
				for j := range got {
					if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
						t.Fatalf("G=%d step %d: dst[%d] = %x, scalar %x", G, i, j, math.Float32bits(got[j]), math.Float32bits(want[j]))
					}
				}
			}
		}
	}
}

// benchWeight is a 1024×1024 Linear with groups of 128, the shape the
// benchmarks below time one full pass over.
func benchWeight() (w, s []float32) {
	const N, K = 1024, 1024
	r := rand.New(rand.NewPCG(1, 1))
	w, s = make([]float32, N*K), make([]float32, K)
	for i := range w {
		w[i] = float32(r.NormFloat64() * 0.05)
	}
	for i := range s {
		s[i] = float32(math.Exp(r.NormFloat64() * 0.5))
	}
	return w, s
}

// BenchmarkQuantizeScaledRows times one scaled quantization of a
// 1024×1024 weight, scalar loop against the kernels.
func BenchmarkQuantizeScaledRows(b *testing.B) {
	const N, K, G = 1024, 1024, 128
	w, s := benchWeight()
	p, _ := NewPacked(K, N, G)
	for _, c := range []struct {
		name string
		f    func(w, s []float32, n0, n1 int) error
	}{{"scalar", p.quantizeScaledRowsScalar}, {"kernels", p.QuantizeScaledRows}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(4 * N * K)
			for b.Loop() {
				if err := c.f(w, s, 0, N); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkClipDelta times one clipping step over every group of a
// 1024×1024 weight, scalar loop against the kernels.
func BenchmarkClipDelta(b *testing.B) {
	const G = 128
	w, _ := benchWeight()
	d := make([]float32, G)
	type rng struct{ mx, mn float32 }
	ranges := make([]rng, len(w)/G)
	for i := range ranges {
		ranges[i].mx, ranges[i].mn, _ = GroupRange(w[i*G : (i+1)*G])
	}
	for _, c := range []struct {
		name string
		f    func(dst, v []float32, mx, mn, bound float32) error
	}{{"scalar", clipDeltaScalar}, {"kernels", ClipDelta}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(4 * len(w)))
			for b.Loop() {
				for i, g := range ranges {
					bound := max(g.mx, -g.mn) * ClipShrink(3)
					if err := c.f(d, w[i*G:(i+1)*G], g.mx, g.mn, bound); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
