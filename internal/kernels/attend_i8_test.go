package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestI8DotMatchesGo: every implementation's integer score kernel gives
// bitwise the pure-Go loop's scores (integer sums are exact, and both
// scale the sum once), over key counts around the kernels' 4- and
// 16-key tiles, head sizes that do and do not fit their vectors, padded
// strides, and the extreme codes ±127 (and -128, which QuantizeInt8
// never writes but a kernel must not mistake). Nothing past s[:n] is
// written.
func TestI8DotMatchesGo(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(21, 21))
		for _, d := range []int{128, 64, 192, 48, 16, 5} {
			for _, n := range []int{1, 3, 4, 5, 15, 16, 17, 31, 32, 33, 70} {
				stride := d + 16*r.IntN(2)
				q := make([]int8, d)
				k := make([]int8, (n-1)*stride+d)
				for i := range q {
					q[i] = int8(r.IntN(255) - 127)
				}
				for i := range k {
					k[i] = int8(r.IntN(256) - 128)
				}
				if n > 2 { // one key all +127 against a query all -127
					for i := range q {
						q[i] = -127
						k[2*stride+i] = 127
					}
				}
				var sum int32
				for _, c := range q {
					sum += int32(c)
				}
				const mult = float32(0.0123)
				got, check := guarded(t, n)
				active.i8Dot.dot(got, q, k, n, d, stride, mult, 128*sum)
				check()
				if x := &active.i8Dot; x.vecQ2 != nil && d%x.lanes == 0 {
					checkTwoHeads(t, q, n, mult, 128, func(s []float32, sstride int, q2 []int8, m0, m1 float32, b0, b1 int32) {
						x.vecQ2(&s[0], sstride, &q2[0], &k[0], n, d, stride, m0, m1, b0, b1)
					}, func(s []float32, qh []int8, m float32, b int32) { x.dot(s, qh, k, n, d, stride, m, b) })
				}
				want := make([]float32, n)
				i8DotGo(want, q, k, n, d, stride, mult)
				for j := range want {
					if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
						t.Fatalf("d=%d n=%d stride=%d: s[%d] = %g, pure Go %g", d, n, stride, j, got[j], want[j])
					}
				}
			}
		}
	})
}

// TestAttendInt8QueryEdges: the query's quantization keeps the edge cases
// of the float kernels on every implementation. An all-zero query (scale
// 0) scores every key 0, so the output is the plain mean of the values; a
// NaN in the query (NaN scale, zero codes) makes every output NaN instead
// of disappearing into codes.
func TestAttendInt8QueryEdges(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(22, 22))
		for _, d := range []int{128, 24} {
			const n = 37
			c := newKVCase(r, 1, 1, n, d)
			out := make([]float32, d)
			AttendInt8(out, make([]float32, d), c.k8, c.v8, c.ks, c.vs, n, d, c.stride, kvScale, make([]float32, n))
			for i := range d {
				var mean float64
				for j := range n {
					mean += float64(c.vq[j*c.stride+i]) / n
				}
				if math.Abs(float64(out[i])-mean) > 1e-5*(1+math.Abs(mean)) {
					t.Fatalf("d=%d zero query: out[%d] = %g, mean of the values %g", d, i, out[i], mean)
				}
			}
			q := randVec(r, d)
			q[d/2] = float32(math.NaN())
			AttendInt8(out, q, c.k8, c.v8, c.ks, c.vs, n, d, c.stride, kvScale, make([]float32, n))
			for i, x := range out {
				if !math.IsNaN(float64(x)) {
					t.Fatalf("d=%d NaN query: out[%d] = %g", d, i, x)
				}
			}
		}
	})
}

// checkTwoHeads runs a two-head score kernel on the query codes q and
// their negation (scales mult and 2·mult, biases offset·Σ codes) and
// requires each head's n scores bitwise what the one-head kernel gives it,
// nothing written outside them.
func checkTwoHeads(t *testing.T, q []int8, n int, mult float32, offset int32,
	two func(s []float32, sstride int, q2 []int8, m0, m1 float32, b0, b1 int32),
	one func(s []float32, qh []int8, m float32, b int32)) {
	t.Helper()
	d := len(q)
	q2 := append(append([]int8(nil), q...), make([]int8, d)...)
	var sum, sum2 int32
	for i, c := range q {
		q2[d+i] = -max(c, -127)
		sum += int32(c)
		sum2 += int32(q2[d+i])
	}
	const sstride = 90
	got, check := guarded(t, sstride+n)
	two(got, sstride, q2, mult, 2*mult, offset*sum, offset*sum2)
	check()
	want := make([]float32, n)
	for h := range 2 {
		one(want, q2[h*d:(h+1)*d], float32(h+1)*mult, []int32{offset * sum, offset * sum2}[h])
		for j := range n {
			if math.Float32bits(got[h*sstride+j]) != math.Float32bits(want[j]) {
				t.Fatalf("d=%d n=%d head %d: two-head s[%d] = %g, one head %g", d, n, h, j, got[h*sstride+j], want[j])
			}
		}
	}
}
