package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

var opLens = []int{0, 1, 3, 7, 8, 15, 16, 17, 31, 64, 100, 128, 1000, 1024, 4097}

// closeRel fails unless |got-want| <= tol·scale (scale > 0).
func closeRel(t *testing.T, what string, got float32, want, scale, tol float64) {
	t.Helper()
	if math.IsNaN(float64(got)) || math.Abs(float64(got)-want) > tol*scale {
		t.Fatalf("%s = %g, want %g (tolerance %g of %g)", what, got, want, tol, scale)
	}
}

// Float32 rounding of a handful of operations per element: a few ulp (2⁻²⁴
// ≈ 6e-8) each; 1e-5 relative is the package contract and leaves margin for
// float32 reductions of up to a few thousand terms.
const opTol = 1e-5

func TestDot(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		for _, n := range opLens {
			a, b := randVec(r, n), randVec(r, n+3)
			var ref, mag float64
			for i := range n {
				ref += float64(a[i]) * float64(b[i])
				mag += math.Abs(float64(a[i]) * float64(b[i]))
			}
			closeRel(t, "Dot", Dot(a, b), ref, mag+1e-30, opTol)
		}
	})
}

func TestAxpy(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 4))
		for _, n := range opLens {
			x := randVec(r, n)
			y, check := guarded(t, n)
			y0 := randVec(r, n)
			copy(y, y0)
			const alpha = 0.37
			Axpy(alpha, x, y)
			check()
			for i := range n {
				want := float64(y0[i]) + alpha*float64(x[i])
				closeRel(t, "Axpy", y[i], want, math.Abs(float64(y0[i]))+math.Abs(alpha*float64(x[i]))+1e-30, opTol)
			}
		}
	})
}

func TestRMSNorm(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(5, 6))
		for _, n := range opLens[1:] {
			x, w := randVec(r, n), randVec(r, n)
			const eps = 1e-6
			var ss float64
			for _, v := range x {
				ss += float64(v) * float64(v)
			}
			rs := 1 / math.Sqrt(ss/float64(n)+eps)
			for _, alias := range []bool{false, true} {
				dst, check := guarded(t, n)
				src := x
				if alias {
					copy(dst, x)
					src = dst
				}
				RMSNorm(dst, src, w, eps)
				check()
				for i := range n {
					want := float64(x[i]) * rs * float64(w[i])
					closeRel(t, "RMSNorm", dst[i], want, math.Abs(want)+1e-30, opTol)
				}
			}
		}
	})
}

func TestSiLUMul(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 8))
		for _, n := range opLens {
			g, u := randVec(r, n), randVec(r, n)
			for i := range g {
				g[i] *= 4 // reach the saturated ends of the sigmoid
			}
			if n > 3 {
				g[0], g[1], g[2] = -100, 100, 0
			}
			dst, check := guarded(t, n)
			SiLUMul(dst, g, u)
			check()
			for i := range n {
				gv := float64(g[i])
				want := gv / (1 + math.Exp(-gv)) * float64(u[i])
				closeRel(t, "SiLUMul", dst[i], want, math.Abs(want)+1e-30, opTol)
			}
		}
	})
}

func TestSoftmax(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 10))
		for _, n := range opLens[1:] {
			buf, check := guarded(t, n)
			x := randVec(r, n)
			for i := range x {
				x[i] *= 10
			}
			if n > 2 {
				x[1] = -200 // underflows to 0 after max subtraction
			}
			copy(buf, x)
			Softmax(buf)
			check()
			m := math.Inf(-1)
			for _, v := range x {
				m = math.Max(m, float64(v))
			}
			var sum float64
			for _, v := range x {
				sum += math.Exp(float64(v) - m)
			}
			for i := range n {
				want := math.Exp(float64(x[i])-m) / sum
				closeRel(t, "Softmax", buf[i], want, want+1e-30, opTol)
			}
		}
	})
}

// TestSoftmaxRange spans the whole float32 range of e^x, subnormal results
// included, so a vector exp's range reduction and scaling are checked.
func TestSoftmaxRange(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		const n = 4099
		x := make([]float32, n)
		for i := range x {
			x[i] = -110 + 110*float32(i)/(n-1) // last is 0: the max
		}
		x[n/2] = float32(math.Inf(-1)) // a masked position
		buf, check := guarded(t, n)
		copy(buf, x)
		Softmax(buf)
		check()
		var sum float64
		for _, v := range x {
			sum += math.Exp(float64(v))
		}
		for i, v := range x {
			want := math.Exp(float64(v)) / sum
			// Results below the float32 normal range (2⁻¹²⁶) carry absolute,
			// not relative, precision.
			closeRel(t, "Softmax", buf[i], want, want+0x1p-126, 1e-5)
		}
	})
}

func TestRoPE(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(11, 12))
		for _, d := range []int{2, 4, 16, 32, 64, 128, 130} {
			half := d / 2
			cos, sin := make([]float32, half), make([]float32, half)
			for i := range half {
				a := r.Float64() * 100
				cos[i], sin[i] = float32(math.Cos(a)), float32(math.Sin(a))
			}
			x0 := randVec(r, d)
			x, check := guarded(t, d)
			copy(x, x0)
			RoPE(x, cos, sin)
			check()
			for i := range half {
				a, b := float64(x0[i]), float64(x0[i+half])
				c, s := float64(cos[i]), float64(sin[i])
				scale := math.Abs(a) + math.Abs(b)
				closeRel(t, "RoPE lo", x[i], a*c-b*s, scale, opTol)
				closeRel(t, "RoPE hi", x[i+half], b*c+a*s, scale, opTol)
			}
		}
	})
}

func TestAttend(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(13, 14))
		for _, c := range []struct{ n, d, stride int }{{0, 8, 8}, {1, 16, 16}, {3, 64, 128}, {17, 128, 1024}, {300, 128, 256}, {5, 7, 9}} {
			n, d, stride := c.n, c.d, c.stride
			size := max(0, (n-1)*stride+d)
			q, k, v := randVec(r, d), randVec(r, size), randVec(r, size)
			scale := float32(1 / math.Sqrt(float64(d)))
			out, check := guarded(t, d)
			scratch, checkScratch := guarded(t, n)
			Attend(out, q, k, v, n, d, stride, scale, scratch)
			check()
			checkScratch()
			s := make([]float64, n)
			m := math.Inf(-1)
			for j := range n {
				for i := range d {
					s[j] += float64(q[i]) * float64(k[j*stride+i])
				}
				s[j] *= float64(scale)
				m = math.Max(m, s[j])
			}
			var sum float64
			for j := range s {
				s[j] = math.Exp(s[j] - m)
				sum += s[j]
			}
			for i := range d {
				var want, mag float64
				for j := range n {
					p := s[j] / sum * float64(v[j*stride+i])
					want += p
					mag += math.Abs(p)
				}
				// Scores carry float32 dot-product error (~1e-6 absolute
				// for |q·k| ~ 10), which exp turns into relative error of
				// the weights; 1e-4 of Σ p|v| bounds it.
				closeRel(t, "Attend", out[i], want, mag+1e-30, 1e-4)
			}
		}
	})
}

func TestSoftmaxNaNPropagates(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		x := make([]float32, 64)
		x[5] = float32(math.NaN())
		Softmax(x)
		nan := 0
		for _, v := range x {
			if v != v {
				nan++
			}
		}
		if nan == 0 {
			t.Fatal("NaN input vanished from Softmax output")
		}
	})
}

// TestF16ToF32 widens every binary16 value, at every offset of a vector
// (the assembly's whole vectors and the Go tail), on every implementation:
// each gives half.F16ToF32's bits.
func TestF16ToF32(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		src := make([]uint16, 1<<16)
		for i := range src {
			src[i] = uint16(i)
		}
		for _, off := range []int{0, 1, 15} {
			s := src[off:]
			dst := make([]float32, len(s)+1)
			dst[len(s)] = 42
			F16ToF32(dst, s)
			for i, h := range s {
				if got, want := math.Float32bits(dst[i]), math.Float32bits(half.F16ToF32(h)); got != want {
					t.Fatalf("offset %d: %#04x widened to %#08x, want %#08x", off, h, got, want)
				}
			}
			if dst[len(s)] != 42 {
				t.Fatalf("offset %d: wrote past the source's length", off)
			}
		}
	})
}
