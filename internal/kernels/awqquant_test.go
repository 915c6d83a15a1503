package kernels

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// The references below are the scalar loops of package awq, verbatim: every
// implementation must give their bits.

func refScaleRange(dst, v, s []float32) (mx, mn float32, nan bool) {
	mx, mn = v[0]*s[0], v[0]*s[0]
	var bad uint32
	for i, x := range v {
		y := x * s[i]
		dst[i] = y
		if y > mx {
			mx = y
		}
		if y < mn {
			mn = y
		}
		bad |= (0x7f800000 - math.Float32bits(y)&0x7fffffff) >> 31
	}
	return mx, mn, bad != 0
}

func refQuantCodesOr(acc []uint32, v []float32, sf, z float32, shift uint) {
	for i, x := range v {
		acc[i] |= uint32(clampCode(roundEven(x/sf)+z)) << shift
	}
}

func refClipDelta(dst, v []float32, bound, sf, z float32) {
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
}

// forEachAWQImpl runs f with the pure-Go loops and, where the CPU has
// them, with the assembly bodies.
func forEachAWQImpl(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	sr, mm, qc, cd := scaleRangeAsm, minMaxAsm, quantCodesOrAsm, clipDeltaAsm
	defer func() { scaleRangeAsm, minMaxAsm, quantCodesOrAsm, clipDeltaAsm = sr, mm, qc, cd }()
	scaleRangeAsm, minMaxAsm, quantCodesOrAsm, clipDeltaAsm = nil, nil, nil, nil
	t.Run("generic", f)
	if sr == nil && qc == nil {
		return
	}
	scaleRangeAsm, minMaxAsm, quantCodesOrAsm, clipDeltaAsm = sr, mm, qc, cd
	t.Run("avx512", f)
}

var awqLengths = []int{1, 5, 15, 16, 17, 31, 32, 33, 64, 100, 128, 129, 1000}

// awqGroup fills a group of n weights of one of several kinds: normal
// weights, signed zeros mixed into non-positive or non-negative values
// (the max or min is then a zero whose sign the first occurrence decides),
// all zeros, subnormals, and huge values whose products overflow.
func awqGroup(r *rand.Rand, kind, n int) []float32 {
	v := make([]float32, n)
	negZero := float32(math.Copysign(0, -1))
	for i := range v {
		x := float32(r.NormFloat64())
		switch kind {
		case 1: // non-positive with signed zeros: max is ±0
			x = -abs32(x)
			if r.IntN(3) == 0 {
				x = [2]float32{0, negZero}[r.IntN(2)]
			}
		case 2: // non-negative with signed zeros: min is ±0
			x = abs32(x)
			if r.IntN(3) == 0 {
				x = [2]float32{0, negZero}[r.IntN(2)]
			}
		case 3: // only zeros
			x = [2]float32{0, negZero}[r.IntN(2)]
		case 4: // subnormal and tiny
			x = math.Float32frombits(r.Uint32()&0x807fffff) * float32(1+r.IntN(2))
		case 5: // huge: products overflow to ±Inf
			x *= 3e38
		}
		v[i] = x
	}
	return v
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

func sameBits(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func TestScaleRange(t *testing.T) {
	forEachAWQImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, n := range awqLengths {
			for kind := range 6 {
				for rep := range 20 {
					v := awqGroup(r, kind, n)
					s := make([]float32, n)
					for i := range s {
						s[i] = float32(math.Exp(r.NormFloat64()))
						if kind == 4 && r.IntN(2) == 0 {
							s[i] = 1
						}
					}
					wantNaN := rep%4 == 3 // NaN at a random place, or ∞·0
					if wantNaN {
						i := r.IntN(n)
						if r.IntN(2) == 0 {
							v[i] = float32(math.NaN())
						} else {
							v[i], s[i] = float32(math.Inf(1)), 0
						}
					}
					want := make([]float32, n)
					wmx, wmn, wnan := refScaleRange(want, v, s)
					if wnan != wantNaN {
						t.Fatalf("reference NaN flag %v", wnan)
					}
					got, check := guarded(t, n)
					mx, mn, nan := ScaleRange(got, v, s)
					check()
					if i := sameBits(got, want); i >= 0 {
						t.Fatalf("n=%d kind %d: dst[%d] = %x, want %x", n, kind, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
					}
					if nan != wnan {
						t.Fatalf("n=%d kind %d: nan = %v, want %v", n, kind, nan, wnan)
					}
					if !nan && (math.Float32bits(mx) != math.Float32bits(wmx) || math.Float32bits(mn) != math.Float32bits(wmn)) {
						t.Fatalf("n=%d kind %d: range [%x, %x], want [%x, %x]", n, kind,
							math.Float32bits(mn), math.Float32bits(mx), math.Float32bits(wmn), math.Float32bits(wmx))
					}
					// MinMax of the products is the same loop without scaling.
					mx2, mn2, nan2 := MinMax(want)
					if nan2 != wnan || !nan2 && (math.Float32bits(mx2) != math.Float32bits(wmx) || math.Float32bits(mn2) != math.Float32bits(wmn)) {
						t.Fatalf("n=%d kind %d: MinMax = %v %v %v, want %v %v %v", n, kind, mx2, mn2, nan2, wmx, wmn, wnan)
					}
				}
			}
		}
	})
}

// TestScaleRangeZeroSign pins the case vector max/min alone gets wrong:
// the sign of a zero extreme is the first zero's, wherever the lanes put it.
func TestScaleRangeZeroSign(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	forEachAWQImpl(t, func(t *testing.T) {
		for _, n := range []int{16, 32, 48} {
			for first := 0; first < n; first += 5 {
				for _, z0 := range []float32{0, negZero} {
					v := make([]float32, n)
					for i := range v {
						v[i] = -1 - float32(i) // max is the zero
						if i > first {
							v[i] = -z0 + 0*v[i] // later zeros of the other sign
						}
					}
					v[first] = z0
					for i := range first {
						v[i] = -2
					}
					ones := make([]float32, n)
					for i := range ones {
						ones[i] = 1
					}
					want := make([]float32, n)
					wmx, _, _ := refScaleRange(want, v, ones)
					mx, _, _ := ScaleRange(make([]float32, n), v, ones)
					mx2, _, _ := MinMax(v)
					if math.Float32bits(mx) != math.Float32bits(wmx) || math.Float32bits(mx2) != math.Float32bits(wmx) {
						t.Fatalf("n=%d first zero at %d (%v): max bits %x / %x, want %x", n, first, z0,
							math.Float32bits(mx), math.Float32bits(mx2), math.Float32bits(wmx))
					}
				}
			}
		}
	})
}

// quantCase builds a group with its fp16 scale and zero point as package
// awq derives them, and with ties: weights exactly (k+½)·sf.
func quantCase(r *rand.Rand, kind, n int) (v []float32, sf, z float32) {
	v = awqGroup(r, kind%4, n)
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	sf = half.F16ToF32(half.F32ToF16(max(hi-lo, 1e-5) / 15))
	z = clampCode(-roundEven(lo / sf))
	if kind >= 4 {
		for i := range v {
			if r.IntN(2) == 0 {
				k := float32(r.IntN(40) - 20)
				v[i] = (k + 0.5) * sf // a tie when the product is exact
			}
		}
	}
	return v, sf, z
}

func TestQuantCodesOr(t *testing.T) {
	forEachAWQImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(13, 14))
		for _, n := range awqLengths {
			for kind := range 6 {
				for rep := range 10 {
					v, sf, z := quantCase(r, kind, n)
					if rep == 9 {
						v[r.IntN(n)] = float32(math.NaN())
						v[r.IntN(n)] = float32(math.Inf(-1))
						v[r.IntN(n)] = float32(math.Inf(1))
					}
					shift := uint(4 * r.IntN(8))
					want := make([]uint32, n)
					for i := range want {
						want[i] = r.Uint32() &^ (15 << shift)
					}
					got := append([]uint32(nil), want...)
					refQuantCodesOr(want, v, sf, z, shift)
					QuantCodesOr(got, v, sf, z, shift)
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("n=%d kind %d: acc[%d] = %#x, want %#x (v=%g sf=%g z=%g)", n, kind, i, got[i], want[i], v[i], sf, z)
						}
					}
				}
			}
		}
	})
}

func TestClipDeltaKernel(t *testing.T) {
	forEachAWQImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(15, 16))
		for _, n := range awqLengths {
			for kind := range 6 {
				for step := range 10 {
					v, _, _ := quantCase(r, kind, n)
					var m float32
					for _, x := range v {
						m = max(m, abs32(x))
					}
					bound := m * (1 - float32(step)/20)
					hi, lo := bound, -bound
					for _, x := range v {
						hi, lo = max(hi, x), min(lo, x)
					}
					hi, lo = min(hi, bound), max(lo, -bound)
					sf := half.F16ToF32(half.F32ToF16(max(hi-lo, 1e-5) / 15))
					z := clampCode(-roundEven(lo / sf))
					if kind >= 4 {
						for i := range v {
							if r.IntN(3) == 0 {
								v[i] = (float32(r.IntN(40)-20) + 0.5) * sf
							}
						}
					}
					if step == 9 {
						v[r.IntN(n)] = float32(math.NaN())
						v[r.IntN(n)] = float32(math.Inf(1))
					}
					want := make([]float32, n)
					refClipDelta(want, v, bound, sf, z)
					got, check := guarded(t, n)
					ClipDelta(got, v, bound, sf, z)
					check()
					if i := sameBits(got, want); i >= 0 {
						t.Fatalf("n=%d kind %d step %d: dst[%d] = %x, want %x (v=%g)", n, kind, step, i,
							math.Float32bits(got[i]), math.Float32bits(want[i]), v[i])
					}
				}
			}
		}
	})
}

// TestRoundEvenVRNDSCALE compares the assembly rounding (VRNDSCALEPS,
// immediate 0) with Go's roundEven on every 257th float32 bit pattern (all
// of them with STREAMGUARD_LONG=1) plus ties, ±0, huge values, ±Inf and
// NaN. Every non-NaN result must have the same bits; a NaN must stay NaN
// (roundEven returns a signalling NaN unchanged, VRNDSCALEPS quiets it;
// the kernels only round quotients, which are never signalling).
func TestRoundEvenVRNDSCALE(t *testing.T) {
	if roundEvenAsm == nil {
		t.Skip("no AVX-512")
	}
	step := uint64(257)
	if os.Getenv("STREAMGUARD_LONG") == "1" {
		step = 1
	}
	const chunk = 1 << 16
	in, out := make([]float32, chunk), make([]float32, chunk)
	special := []float32{0, float32(math.Copysign(0, -1)), 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997,
		8388607.5, -8388607.5, 4194303.5, 8388608, 16777215, 3.4028235e38, -3.4028235e38, 1e-45, -1e-45,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0x7f800001)}
	for k := range 41 {
		special = append(special, float32(k-20)+0.5)
	}
	check := func(vals []float32) {
		for len(vals)%16 != 0 {
			vals = append(vals, 0)
		}
		copy(in, vals)
		roundEvenAsm(&out[0], &in[0], len(vals))
		for i, x := range vals {
			want, got := roundEven(x), out[i]
			if want != want {
				if got == got {
					t.Fatalf("roundEven(%x) = NaN, asm %x", math.Float32bits(x), math.Float32bits(got))
				}
				continue
			}
			if math.Float32bits(got) != math.Float32bits(want) {
				t.Fatalf("roundEven(%x = %g) = %x, asm %x", math.Float32bits(x), x, math.Float32bits(want), math.Float32bits(got))
			}
		}
	}
	check(special)
	vals := make([]float32, 0, chunk)
	for b := uint64(0); b < 1<<32; b += step {
		vals = append(vals, math.Float32frombits(uint32(b)))
		if len(vals) == chunk {
			check(vals)
			vals = vals[:0]
		}
	}
	check(vals)
}
