package kernels

import (
	"fmt"
	"math"
	"math/bits"
)

// The 4-bit KV cache's format.
//
// A 4-bit cache stores each key (and value) vector of one head at one
// position rotated and quantized: y = R·x with R = H·diag(σ)/√d (H the
// d×d Walsh–Hadamard matrix, σ a fixed pattern of signs), then 15-level
// symmetric codes c = round_half_even(y/s) ∈ [-7, 7] with one float32
// scale s = max|y|/7 (QuantizeInt4). R is orthogonal, so it keeps dot
// products and norms; it spreads a vector's energy over all d elements,
// so a few large channels (the keys' outliers after the q/k norms and
// RoPE) no longer set a step that is too coarse for all the others: the
// step shrinks from max|x|/7 to about 2.6·rms(x)/7 for d = 128.
//
// Layout: a vector of d elements (d a power of two, at least 2) takes d/2
// bytes; byte b holds element b in its low nibble and element b+d/2 in
// its high nibble, each a two's-complement code. Splitting the vector in
// halves rather than pairing neighbours lets the vector kernels unpack
// the low and high nibbles of one load into two contiguous runs.

// lo4 and hi4 are the two codes of a byte.
func lo4(b byte) int32 { return int32(int8(b<<4) >> 4) }
func hi4(b byte) int32 { return int32(int8(b) >> 4) }

// rotSign reports whether element i of the rotation's sign pattern σ is
// -1: a fixed pseudo-random pattern (a multiplicative hash of i), so that
// structured vectors, such as one large channel or a constant, do not map
// onto a few Hadamard rows.
func rotSign(i int) bool { return uint32(i+1)*0x9E3779B1>>31 != 0 }

// rotSigns is σ as ±1 (for the vector kernels); hadamardSigns holds, for
// the butterflies of strides 1, 2, 4 and 8 inside a vector of 16, +1 at
// the lower element of each pair and -1 at the upper.
var rotSigns, hadamardSigns = func() (s [maxInt4Dim]float32, h [64]float32) {
	for i := range s {
		s[i] = 1
		if rotSign(i) {
			s[i] = -1
		}
	}
	for k := range 4 {
		for i := range 16 {
			h[16*k+i] = 1
			if i&(1<<k) != 0 {
				h[16*k+i] = -1
			}
		}
	}
	return s, h
}()

// fwht is the unnormalized fast Walsh–Hadamard transform of x in place;
// len(x) is a power of two.
func fwht(x []float32) {
	n := len(x)
	for h := 1; h < n; h *= 2 {
		for i := 0; i < n; i += 2 * h {
			a, b := x[i:i+h], x[i+h:i+2*h]
			for j := range a {
				u, v := a[j], b[j]
				a[j], b[j] = u+v, u-v
			}
		}
	}
}

// RotateInt4 applies the 4-bit cache's rotation R = H·diag(σ)/√d to x in
// place; len(x) must be a power of two.
func RotateInt4(x []float32) {
	checkInt4Dim("RotateInt4", len(x))
	active.i4KV.rotateN(x)
}

// rotateN is RotateInt4 without the check, on this implementation.
func (a *i4Attn) rotateN(x []float32) {
	if a.rotate != nil && len(x) >= 16 {
		a.rotate(&x[0], len(x), &rotSigns[0], invSqrt(len(x)), &hadamardSigns[0])
		return
	}
	for i := range x {
		if rotSign(i) {
			x[i] = -x[i]
		}
	}
	fwht(x)
	scaleBy(x, invSqrt(len(x)))
}

// UnrotateInt4 applies Rᵀ = diag(σ)·H/√d to x in place, undoing
// RotateInt4 up to rounding; len(x) must be a power of two.
func UnrotateInt4(x []float32) {
	checkInt4Dim("UnrotateInt4", len(x))
	active.i4KV.unrotateN(x)
}

// unrotateN is UnrotateInt4 without the check, on this implementation.
func (a *i4Attn) unrotateN(x []float32) {
	if a.unrotate != nil && len(x) >= 16 {
		a.unrotate(&x[0], len(x), &rotSigns[0], invSqrt(len(x)), &hadamardSigns[0])
		return
	}
	fwht(x)
	r := invSqrt(len(x))
	for i := range x {
		if rotSign(i) {
			x[i] *= -r
		} else {
			x[i] *= r
		}
	}
}

func invSqrt(d int) float32 { return float32(1 / math.Sqrt(float64(d))) }

func scaleBy(x []float32, r float32) {
	for i := range x {
		x[i] *= r
	}
}

// checkInt4Dim panics unless d is a power of two, at least 2, and at most
// maxInt4Dim.
func checkInt4Dim(name string, d int) {
	if !ValidInt4Dim(d) {
		panic(fmt.Sprintf("kernels: %s over vectors of %d elements (want a power of two from 2 to %d)", name, d, maxInt4Dim))
	}
}

// maxInt4Dim bounds the vectors of a 4-bit cache (and the sign table).
const maxInt4Dim = 1024

// ValidInt4Dim reports whether a 4-bit cache can hold vectors of d
// elements: d a power of two from 2 to 1024.
func ValidInt4Dim(d int) bool { return d >= 2 && d <= maxInt4Dim && bits.OnesCount(uint(d)) == 1 }

// QuantizeInt4 rotates x (RotateInt4, on a copy in scratch) and writes it
// as 4-bit codes into dst[:len(x)/2] (layout above), returning the scale:
// max|y|/7 for the rotated y, each code round_half_even(y_i/scale), so
// |y_i − scale·c_i| ≤ scale/2. All-zero x gives scale 0 and zero codes; a
// NaN or an infinity in x gives a NaN scale (the rotation spreads it over
// every element; codes 0), so it still reaches the attention that reads
// it. len(x) must be a power of two from 2 to 1024. scratch holds the
// rotated copy: at least len(x) floats, else QuantizeInt4 allocates one
// (the cache passes a worker's buffer: a copy on the stack would escape
// to the heap through the kernels' function values on every call).
func QuantizeInt4(dst []byte, x, scratch []float32) float32 {
	d := len(x)
	checkInt4Dim("QuantizeInt4", d)
	h := d / 2
	dst = dst[:h]
	if len(scratch) < d {
		scratch = make([]float32, d)
	}
	y := scratch[:d]
	copy(y, x)
	a := &active.i4KV
	a.rotateN(y)
	var amax float32
	for _, v := range y {
		a := math.Float32frombits(math.Float32bits(v) &^ (1 << 31))
		if !(a <= amax) { // a > amax, or a NaN
			amax = a
			if a != a || math.IsInf(float64(a), 0) {
				clear(dst)
				return float32(math.NaN())
			}
		}
	}
	if amax == 0 {
		clear(dst)
		return 0
	}
	inv := 7 / amax
	if math.IsInf(float64(inv), 0) {
		// amax is denormal: scale the (local, rotated) vector up by an
		// exact power of two so that the step's reciprocal is finite
		// (an infinite one would make 0·∞ of the zeros).
		const up = 1 << 64
		scaleBy(y, up)
		inv = 7 / (amax * up)
	}
	if a.codes != nil && d%32 == 0 {
		a.codes(&dst[0], &y[0], d, inv)
		return amax / 7
	}
	yl, yh := y[:h], y[h:d]
	for i := range dst {
		dst[i] = byte(round7(yl[i]*inv)&0xF) | byte(round7(yh[i]*inv)<<4)
	}
	return amax / 7
}

// round7 rounds v (|v| ≤ 7 up to rounding) to the nearest integer, ties to
// even (as VCVTPS2DQ does), clamped to [-7, 7].
func round7(v float32) int32 { return max(-7, min(7, int32(roundEven(v)))) }

// DequantizeInt4 writes the vector that codes and scale stand for, rotated
// back (UnrotateInt4): what attention over a 4-bit cache effectively
// reads. len(x) must be a power of two from 2 to 1024.
func DequantizeInt4(x []float32, codes []byte, scale float32) {
	d := len(x)
	checkInt4Dim("DequantizeInt4", d)
	h := d / 2
	for i, b := range codes[:h] {
		x[i] = scale * float32(lo4(b))
		x[i+h] = scale * float32(hi4(b))
	}
	UnrotateInt4(x)
}
