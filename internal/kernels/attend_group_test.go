package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttendGroupMatchesAttend: every head of a group gets bitwise what
// Attend computes for it alone, for key counts around the chunk and
// 4-key block boundaries, on every implementation, without writing past
// its outputs.
func TestAttendGroupMatchesAttend(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(6, 6))
		for _, d := range []int{128, 64, 24} {
			chunk := max(4, attnChunkBytes/(4*d))
			for _, n := range []int{0, 1, 3, 4, 5, chunk - 1, chunk, chunk + 1, 2*chunk + 7} {
				for _, g := range []int{1, 2, 4} {
					stride := d + 8*(n%2)
					kv := max(1, n) * stride
					k, v := randVec(r, kv), randVec(r, kv)
					q := randVec(r, g*d)
					out, check := guarded(t, g*d)
					AttendGroup(out, q, g, k, v, n, d, stride, 0.088, make([]float32, g*n))
					check()
					for i := range g {
						want := make([]float32, d)
						Attend(want, q[i*d:(i+1)*d], k, v, n, d, stride, 0.088, make([]float32, n))
						for j := range want {
							if math.Float32bits(out[i*d+j]) != math.Float32bits(want[j]) {
								t.Fatalf("d=%d n=%d g=%d head %d: out[%d] = %g, Attend %g", d, n, g, i, j, out[i*d+j], want[j])
							}
						}
					}
				}
			}
		}
	})
}
