package kernels

import "math"

// The AWQ weight quantizer (package awq) spends most of its time in four
// per-weight loops over groups of 32–128 weights. They are here so they
// can run as AVX-512 assembly; every path gives the bits of the scalar Go
// loop it replaces, so quantized checkpoints do not depend on the CPU.
// The assembly bodies handle a multiple of 16 weights and Go finishes the
// tail; they are nil where the CPU or the build has none.
var (
	scaleRangeAsm   func(dst, v, s *float32, n int) (mx, mn float32, nan bool)
	minMaxAsm       func(v *float32, n int) (mx, mn float32, nan bool)
	quantCodesOrAsm func(acc *uint32, v *float32, n int, sf, z float32, shift uint64)
	clipDeltaAsm    func(dst, v *float32, n int, bound, nbound, sf, z float32)
	// roundEvenAsm is the rounding step of the kernels alone, for the test
	// that checks it against the scalar roundEven.
	roundEvenAsm func(dst, v *float32, n int)
)

// ScaleRange sets dst[i] = v[i]·s[i] and returns the max and min of those
// products and whether any is NaN (±Inf is not). max and min are those of
// the Go loop that starts from element 0 and replaces on a strict > or <:
// among equal extremes the first wins, which decides the sign of a zero
// max or min. With nan true, mx and mn are unspecified. v must not be
// empty; dst and s must be at least as long as v.
func ScaleRange(dst, v, s []float32) (mx, mn float32, nan bool) {
	dst, s = dst[:len(v)], s[:len(v)]
	n := 0
	if scaleRangeAsm != nil && len(v) >= 16 {
		n = len(v) &^ 15
		mx, mn, nan = scaleRangeAsm(&dst[0], &v[0], &s[0], n)
		mx, mn = firstZero(dst[:n], mx), firstZero(dst[:n], mn)
	} else {
		mx, mn = v[0]*s[0], v[0]*s[0]
	}
	var bad uint32
	for i := n; i < len(v); i++ {
		y := v[i] * s[i]
		dst[i] = y
		if y > mx {
			mx = y
		}
		if y < mn {
			mn = y
		}
		bad |= isNaN(y)
	}
	return mx, mn, nan || bad != 0
}

// MinMax is ScaleRange without the scaling: the max and min of v (first
// wins among equals) and whether any is NaN.
func MinMax(v []float32) (mx, mn float32, nan bool) {
	n := 0
	if minMaxAsm != nil && len(v) >= 16 {
		n = len(v) &^ 15
		mx, mn, nan = minMaxAsm(&v[0], n)
		mx, mn = firstZero(v[:n], mx), firstZero(v[:n], mn)
	} else {
		mx, mn = v[0], v[0]
	}
	var bad uint32
	for _, x := range v[n:] {
		if x > mx {
			mx = x
		}
		if x < mn {
			mn = x
		}
		bad |= isNaN(x)
	}
	return mx, mn, nan || bad != 0
}

// firstZero gives an extreme m of v the sign of the sequential Go loop.
// Vector max and min find the right value but, for the one value with two
// encodings (±0), not necessarily the encoding that comes first in v,
// which is the one the loop keeps (it only replaces on a strict
// inequality, so the first element equal to the final extreme sets it).
func firstZero(v []float32, m float32) float32 {
	if m != 0 {
		return m
	}
	for _, x := range v {
		if x == 0 {
			return x
		}
	}
	return m
}

// isNaN is 1 for a NaN and 0 otherwise, without a branch.
func isNaN(x float32) uint32 { return (0x7f800000 - math.Float32bits(x)&0x7fffffff) >> 31 }

// QuantCodesOr ORs each weight's 4-bit AWQ code, shifted left by shift,
// into acc: acc[i] |= uint32(clampCode(roundEven(v[i]/sf)+z)) << shift,
// with roundEven rounding half to even, clampCode clamping to [0, 15] (a
// NaN stays NaN and converts to 0), and v[i]/sf a true division. acc must
// be at least as long as v.
func QuantCodesOr(acc []uint32, v []float32, sf, z float32, shift uint) {
	acc = acc[:len(v)]
	n := 0
	if quantCodesOrAsm != nil {
		n = len(v) &^ 15
		if n > 0 {
			quantCodesOrAsm(&acc[0], &v[0], n, sf, z, uint64(shift))
		}
	}
	for i := n; i < len(v); i++ {
		acc[i] |= nanToZero(clampCode(roundEven(v[i]/sf)+z)) << shift
	}
}

// ClipDelta writes the error of quantizing each weight clipped to
// [−bound, bound] with scale sf and zero point z:
// dst[i] = (clampCode(roundEven(c/sf)+z) − z)·sf − v[i], c = v[i] clamped
// (a NaN passes the clamp). dst must be at least as long as v.
func ClipDelta(dst, v []float32, bound, sf, z float32) {
	dst = dst[:len(v)]
	n := 0
	if clipDeltaAsm != nil {
		n = len(v) &^ 15
		if n > 0 {
			clipDeltaAsm(&dst[0], &v[0], n, bound, -bound, sf, z)
		}
	}
	for i := n; i < len(v); i++ {
		x := v[i]
		c := x
		if c > bound {
			c = bound
		}
		if c < -bound {
			c = -bound
		}
		dst[i] = (clampCode(roundEven(c/sf)+z)-z)*sf - x
	}
}

// clampCode clamps to [0, 15]; NaN passes through.
func clampCode(x float32) float32 {
	if x < 0 {
		x = 0
	}
	if x > 15 {
		x = 15
	}
	return x
}

// nanToZero converts a clamped code to an integer, a NaN to 0 on every
// architecture (the conversion of NaN is implementation-specific in Go).
func nanToZero(x float32) uint32 {
	if x != x {
		return 0
	}
	return uint32(x)
}

// roundEven rounds to the nearest integer, ties to even, in float32 by
// adding and subtracting 2^23 to |x| and restoring the sign; magnitudes of
// 2^23 and above (and NaN) are returned unchanged. It is the rounding of
// package awq, which VRNDSCALEPS with immediate 0 reproduces.
func roundEven(x float32) float32 {
	const magic = 1 << 23
	const sign = 1 << 31
	b := math.Float32bits(x)
	a := math.Float32frombits(b &^ sign)
	if !(a < magic) {
		return x
	}
	r := float32(float32(a+magic) - magic)
	return math.Float32frombits(math.Float32bits(r) | b&sign)
}
