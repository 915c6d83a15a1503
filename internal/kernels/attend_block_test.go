package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAttendBlockMatchesAttend: every query head of every row of a block
// gets bitwise what Attend computes for it alone over the row's causal
// prefix, for tiles of four queries and leftovers, key counts around the
// chunk and 4-key boundaries, on every implementation. Outputs of other
// key/value groups in the rows' stride (and guards around the block) are
// left untouched.
func TestAttendBlockMatchesAttend(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(7, 7))
		for _, d := range []int{128, 64, 48} {
			chunk := max(4, attnChunkBytes/(4*d))
			for _, n0 := range []int{1, 2, 5, chunk - 1, chunk + 3, 2*chunk + 6} {
				for _, rg := range [][2]int{{1, 1}, {1, 2}, {1, 4}, {8, 2}, {4, 4}, {5, 1}, {3, 2}, {16, 1}, {2, 3}} {
					rows, g := rg[0], rg[1]
					stride := d + 8*(n0%2)
					qstride := 2*g*d + 16 // another group's heads sit between rows
					ostride := g*d + 8*(rows%2)
					n := n0 + rows - 1
					k, v := randVec(r, n*stride), randVec(r, n*stride)
					span := (rows-1)*ostride + g*d
					q := randVec(r, (rows-1)*qstride+g*d)
					out, check := guarded(t, span)
					const sentinel = float32(-7.25)
					for i := range out {
						out[i] = sentinel
					}
					scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
					AttendBlock(out, ostride, q, qstride, rows, g, k, v, n0, d, stride, 0.088, scratch)
					check()
					for row := range rows {
						for h := range g {
							o, qi := row*ostride+h*d, row*qstride+h*d
							want := make([]float32, d)
							Attend(want, q[qi:qi+d], k, v, n0+row, d, stride, 0.088, make([]float32, n0+row))
							for j := range want {
								if math.Float32bits(out[o+j]) != math.Float32bits(want[j]) {
									t.Fatalf("d=%d n0=%d rows=%d g=%d: row %d head %d out[%d] = %g, Attend %g", d, n0, rows, g, row, h, j, out[o+j], want[j])
								}
							}
						}
						if row < rows-1 {
							for i := row*ostride + g*d; i < (row+1)*ostride; i++ {
								if out[i] != sentinel {
									t.Fatalf("d=%d n0=%d rows=%d g=%d: wrote out[%d] between rows", d, n0, rows, g, i)
								}
							}
						}
					}
				}
			}
		}
	})
}

// BenchmarkAttendBlock: a 0.6B-shaped prefill block (8 rows × 2 query
// heads, d 128) against the same rows attended one by one.
func BenchmarkAttendBlock(b *testing.B) {
	const rows, g, d, n0 = 8, 2, 128, 256
	r := rand.New(rand.NewPCG(1, 1))
	n := n0 + rows - 1
	k, v := randVec(r, n*d), randVec(r, n*d)
	q := randVec(r, rows*g*d)
	out := make([]float32, rows*g*d)
	scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
	for _, name := range implNames() {
		b.Run(name+"/block", func(b *testing.B) {
			restore, _ := useImpl(name)
			defer restore()
			for b.Loop() {
				AttendBlock(out, g*d, q, g*d, rows, g, k, v, n0, d, d, 0.088, scratch)
			}
		})
		b.Run(name+"/rows", func(b *testing.B) {
			restore, _ := useImpl(name)
			defer restore()
			for b.Loop() {
				for row := range rows {
					AttendGroup(out[row*g*d:], q[row*g*d:], g, k, v, n0+row, d, d, 0.088, scratch)
				}
			}
		})
	}
}
