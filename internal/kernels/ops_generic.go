package kernels

import "math"

func dotGeneric(a, b []float32) float32 {
	var s [4]float32
	dot4(&s, a, b)
	return sum4(&s)
}

func axpyGeneric(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}

func rmsNormGeneric(dst, x, w []float32, eps float32) {
	// A float64 sum keeps the mean exact to float32 precision for any width.
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := float32(1 / math.Sqrt(ss/float64(len(x))+float64(eps)))
	dst, w = dst[:len(x)], w[:len(x)]
	for i, v := range x {
		dst[i] = w[i] * (v * r)
	}
}

func siluMulGeneric(dst, gate, up []float32) {
	gate, up = gate[:len(dst)], up[:len(dst)]
	for i, g := range gate {
		dst[i] = float32(float64(g)/(1+math.Exp(-float64(g)))) * up[i]
	}
}

func softmaxGeneric(x []float32) {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	var sum float32
	for i, v := range x {
		e := float32(math.Exp(float64(v - m)))
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] *= inv
	}
}

func ropeGeneric(x, cos, sin []float32) {
	half := len(x) / 2
	ropeGeneric2(x[:half], x[half:2*half], cos, sin)
}

// ropeGeneric2 rotates the pairs (lo[i], hi[i]).
func ropeGeneric2(lo, hi, cos, sin []float32) {
	hi, cos, sin = hi[:len(lo)], cos[:len(lo)], sin[:len(lo)]
	for i := range lo {
		a, b := lo[i], hi[i]
		lo[i] = a*cos[i] - b*sin[i]
		hi[i] = b*cos[i] + a*sin[i]
	}
}

// attendWith composes attention from an implementation's dot, softmax and
// axpy, so an implementation accelerates it by accelerating those.
func attendWith(dot func(a, b []float32) float32, softmax func([]float32), axpy func(float32, []float32, []float32)) func(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	return func(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
		clear(out)
		if n == 0 {
			return
		}
		s := scratch[:n]
		for j := range s {
			s[j] = scale * dot(q, k[j*stride:j*stride+d])
		}
		softmax(s)
		for j, p := range s {
			axpy(p, v[j*stride:j*stride+d], out)
		}
	}
}

var attendGeneric = attendWith(dotGeneric, softmaxGeneric, axpyGeneric)
