package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// hadamardRef is R = H·diag(σ)/√d as a dense float64 matrix, built from
// the definition H[i][j] = (-1)^popcount(i&j) rather than the butterfly.
func hadamardRef(d int) [][]float64 {
	R := make([][]float64, d)
	for i := range R {
		R[i] = make([]float64, d)
		for j := range d {
			h := 1.0
			for b := i & j; b != 0; b &= b - 1 {
				h = -h
			}
			if rotSign(j) {
				h = -h
			}
			R[i][j] = h / math.Sqrt(float64(d))
		}
	}
	return R
}

// TestRotateInt4: RotateInt4 is the matrix R of its definition (to float32
// rounding), UnrotateInt4 is its transpose, and R keeps dot products.
func TestRotateInt4(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 41))
	for _, d := range []int{2, 4, 16, 128, 1024} {
		R := hadamardRef(d)
		x, y := randVec(r, d), randVec(r, d)
		rx := append([]float32(nil), x...)
		RotateInt4(rx)
		var worst float64
		for i := range d {
			var want float64
			for j := range d {
				want += R[i][j] * float64(x[j])
			}
			worst = max(worst, math.Abs(float64(rx[i])-want))
		}
		// log2(d) float32 butterflies and one scaling: a few ulps of
		// the vector's norm (about √d here).
		if tol := 1e-6 * float64(d); worst > tol {
			t.Fatalf("d=%d: RotateInt4 off the matrix by %g (tolerance %g)", d, worst, tol)
		}
		back := append([]float32(nil), rx...)
		UnrotateInt4(back)
		ry := append([]float32(nil), y...)
		RotateInt4(ry)
		var dot, rdot float64
		for i := range d {
			if e := math.Abs(float64(back[i] - x[i])); e > 1e-6*float64(d) {
				t.Fatalf("d=%d: UnrotateInt4(RotateInt4(x))[%d] = %g, x %g", d, i, back[i], x[i])
			}
			dot += float64(x[i]) * float64(y[i])
			rdot += float64(rx[i]) * float64(ry[i])
		}
		if math.Abs(dot-rdot) > 1e-5*float64(d) {
			t.Fatalf("d=%d: x·y = %g, Rx·Ry = %g", d, dot, rdot)
		}
	}
	for _, d := range []int{0, 1, 3, 24, 2048} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("RotateInt4 over %d elements did not panic", d)
				}
			}()
			RotateInt4(make([]float32, d))
		}()
	}
}

// TestQuantizeInt4: codes and layout as documented (element b in the low
// nibble of byte b, element b+d/2 in the high one, codes in [-7, 7]),
// error at most half a step in the rotated space, and the edge cases.
func TestQuantizeInt4(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 42))
	for _, d := range []int{2, 16, 128, 256} {
		x := randVec(r, d)
		x[d/2] *= 40 // an outlier channel
		codes := make([]byte, d/2+1)
		codes[d/2] = 0xAB // past the codes: untouched
		s := QuantizeInt4(codes, x, nil)
		if codes[d/2] != 0xAB {
			t.Fatalf("d=%d: QuantizeInt4 wrote past d/2 bytes", d)
		}
		y := append([]float32(nil), x...)
		RotateInt4(y)
		var amax float32
		for _, v := range y {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if s != amax/7 {
			t.Fatalf("d=%d: scale %g, want max|Rx|/7 = %g", d, s, amax/7)
		}
		for i := range d {
			c := lo4(codes[i%(d/2)])
			if i >= d/2 {
				c = hi4(codes[i-d/2])
			}
			if c < -7 || c > 7 {
				t.Fatalf("d=%d: code %d out of [-7, 7]", d, c)
			}
			if e := math.Abs(float64(y[i] - s*float32(c))); e > float64(s)/2*(1+1e-6) {
				t.Fatalf("d=%d: element %d: |%g − %g·%d| = %g > half a step", d, i, y[i], s, c, e)
			}
		}
		// Dequantizing rotates back: close to x in norm.
		back := make([]float32, d)
		DequantizeInt4(back, codes, s)
		var num, den float64
		for i := range d {
			num += float64(back[i]-x[i]) * float64(back[i]-x[i])
			den += float64(x[i]) * float64(x[i])
		}
		// Uniform rounding error of a step max|y|/7 has rms step/√12; the
		// rotation makes max|y| a few rms(y), so the relative error is
		// well under 0.25 (0.12 to 0.2 typically).
		if rel := math.Sqrt(num / den); rel > 0.25 {
			t.Fatalf("d=%d: DequantizeInt4 relative error %g", d, rel)
		}
	}
	codes := []byte{0xFF, 0xFF}
	if s := QuantizeInt4(codes, make([]float32, 4), nil); s != 0 || codes[0] != 0 || codes[1] != 0 {
		t.Fatalf("zero vector: scale %g codes %x", s, codes)
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		x := []float32{1, 2, bad, 4}
		if s := QuantizeInt4(codes, x, nil); !math.IsNaN(float64(s)) || codes[0] != 0 || codes[1] != 0 {
			t.Fatalf("x holding %g: scale %g codes %x, want NaN and zeros", bad, s, codes)
		}
	}
}

// TestRotateInt4MatchesGo: every implementation's rotation and its inverse
// give bitwise the pure-Go butterflies, at every power-of-two size.
func TestRotateInt4MatchesGo(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(46, 46))
		for d := 2; d <= maxInt4Dim; d *= 2 {
			x := randVec(r, d)
			for _, inverse := range []bool{false, true} {
				got, check := guarded(t, d)
				copy(got, x)
				want := append([]float32(nil), x...)
				if inverse {
					UnrotateInt4(got)
					fwht(want)
					for i := range want {
						want[i] *= invSqrt(d)
						if rotSign(i) {
							want[i] = -want[i]
						}
					}
				} else {
					RotateInt4(got)
					for i := range want {
						if rotSign(i) {
							want[i] = -want[i]
						}
					}
					fwht(want)
					scaleBy(want, invSqrt(d))
				}
				check()
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("d=%d inverse=%v: x[%d] = %g, pure Go %g", d, inverse, i, got[i], want[i])
					}
				}
			}
		}
	})
}

// TestRound7: the float32 rounding trick against math.RoundToEven over
// [-7.5, 7.5] in steps of 1/64 (ties included) and a little beyond.
func TestRound7(t *testing.T) {
	for i := -8 * 64; i <= 8*64; i++ {
		v := float32(i) / 64
		want := int32(max(-7, min(7, math.RoundToEven(float64(v)))))
		if got := round7(v); got != want {
			t.Fatalf("round7(%g) = %d, want %d", v, got, want)
		}
	}
}

// TestQuantizeInt4MatchesGo: every implementation writes bitwise the pure-Go
// codes and scale, ties and clamping included.
func TestQuantizeInt4MatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(48, 48))
	for d := 2; d <= maxInt4Dim; d *= 2 {
		x := randVec(r, d)
		for i := range x {
			if i%5 == 0 { // values whose rotated codes are often ties
				x[i] = float32(math.Round(float64(x[i]) * 4))
			}
		}
		restore, _ := useImpl("go")
		want := make([]byte, d/2)
		ws := QuantizeInt4(want, x, nil)
		restore()
		forEachImpl(t, func(t *testing.T) {
			got := make([]byte, d/2)
			if s := QuantizeInt4(got, x, nil); s != ws || string(got) != string(want) {
				t.Fatalf("d=%d: scale %g codes %x, pure Go %g %x", d, s, got, ws, want)
			}
		})
	}
}

// TestQuantizeInt4Outlier: why the 4-bit cache rotates. A head vector with
// one channel 40 times the others (as keys of trained models often have)
// quantized to 15 levels directly spends nearly every code on that channel
// and rounds the rest to zero; rotated first, its error is what any
// vector's is. Both errors are relative L2 over many such vectors.
func TestQuantizeInt4Outlier(t *testing.T) {
	r := rand.New(rand.NewPCG(49, 49))
	const d, trials = 128, 200
	var rotNum, rawNum, den float64
	codes := make([]byte, d/2)
	back := make([]float32, d)
	for range trials {
		x := randVec(r, d)
		x[17] *= 40
		s := QuantizeInt4(codes, x, nil)
		DequantizeInt4(back, codes, s)
		var amax float64
		for _, v := range x {
			amax = max(amax, math.Abs(float64(v)))
		}
		for i, v := range x {
			raw := amax / 7 * math.RoundToEven(float64(v)/(amax/7))
			rawNum += (raw - float64(v)) * (raw - float64(v))
			rotNum += float64(back[i]-v) * float64(back[i]-v)
			den += float64(v) * float64(v)
		}
	}
	rot, raw := math.Sqrt(rotNum/den), math.Sqrt(rawNum/den)
	t.Logf("one channel 40× the others: rotated %.3f, unrotated %.3f relative L2", rot, raw)
	if rot > 0.2 || raw < 2*rot {
		t.Fatalf("rotated %.3f, unrotated %.3f: the rotation should keep the error under 0.2 and at most half the unrotated one", rot, raw)
	}
}

// TestQuantizeTinyVectors: a vector whose largest element is denormal
// (the reciprocal of its step overflows float32) still quantizes like any
// other: int8 gives its largest elements ±127 and its zeros 0; int4 gives
// back the vector to within half a step per rotated element.
func TestQuantizeTinyVectors(t *testing.T) {
	x := make([]float32, 128)
	x[5] = 1e-39
	x[9] = -1e-39
	c8 := make([]int8, 128)
	QuantizeInt8(c8, x)
	for i, c := range c8 {
		want := int8(0)
		switch i {
		case 5:
			want = 127
		case 9:
			want = -127
		}
		if c != want {
			t.Fatalf("int8: code %d = %d, want %d", i, c, want)
		}
	}
	forEachImpl(t, func(t *testing.T) {
		c4 := make([]byte, 64)
		s := QuantizeInt4(c4, x, nil)
		back := make([]float32, 128)
		DequantizeInt4(back, c4, s)
		if s <= 0 || math.IsInf(float64(s), 0) || math.IsNaN(float64(s)) {
			t.Fatalf("int4 scale %g", s)
		}
		// The rotation spreads the two elements over all 128 at about
		// 1.8e-40 each, so each rotated element is a code of ±1 or 0 with
		// its step s = max/7; what comes back is within √128·s/2 of x in
		// norm (not 7 steps of -s everywhere).
		var e float64
		for i, v := range back {
			e += float64(v-x[i]) * float64(v-x[i])
		}
		if math.Sqrt(e) > math.Sqrt(128)*float64(s)/2 {
			t.Fatalf("int4: error %g with step %g: codes %x", math.Sqrt(e), s, c4)
		}
	})
}

// BenchmarkInt4Format is the per-vector cost of the 4-bit cache's format
// at the Qwen3 head size: a 0.6B decode step does, per layer, 16
// rotations (queries), 16 unrotations (outputs) and 16 QuantizeInt4 (the
// new key and value of 8 KV heads).
func BenchmarkInt4Format(b *testing.B) {
	const d = 128
	x := randVec(rand.New(rand.NewPCG(3, 3)), d)
	codes, scratch := make([]byte, d/2), make([]float32, d)
	for _, name := range implNames() {
		restore, _ := useImpl(name)
		b.Run(name+"/rotate", func(b *testing.B) {
			for b.Loop() {
				RotateInt4(x)
			}
		})
		b.Run(name+"/unrotate", func(b *testing.B) {
			for b.Loop() {
				UnrotateInt4(x)
			}
		})
		b.Run(name+"/quantize", func(b *testing.B) {
			for b.Loop() {
				QuantizeInt4(codes, x, scratch)
			}
		})
		restore()
	}
}

// TestQuantizeInt4DoesNotAllocate: with a scratch of the vector's size,
// quantizing (which the cache does for every new key and value) allocates
// nothing on any implementation.
func TestQuantizeInt4DoesNotAllocate(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		x := randVec(rand.New(rand.NewPCG(52, 52)), 128)
		codes, scratch := make([]byte, 64), make([]float32, 128)
		if n := testing.AllocsPerRun(100, func() { QuantizeInt4(codes, x, scratch) }); n != 0 {
			t.Fatalf("QuantizeInt4 with a scratch: %v allocations per call", n)
		}
	})
}
