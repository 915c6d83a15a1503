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
