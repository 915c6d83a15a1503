package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestConcatInt4 checks that the stacked product equals the parts'
// products bit for bit, and that the views compute what the parts did.
func TestConcatInt4(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(8, 8))
		const K, T = 256, 5
		var parts []*Int4Matrix
		for _, N := range []int{32, 16, 48, 40} {
			ac := newAWQCase(t, r, K, N, 64, false)
			m := ac.repack(t)
			parts = append(parts, m)
		}
		x := randVec(r, T*K)
		var want [][]float32
		for _, m := range parts {
			d := make([]float32, T*m.N)
			MatMulInt4(d, x, m, T)
			want = append(want, d)
		}
		all, views, err := ConcatInt4(parts...)
		if err != nil {
			t.Fatal(err)
		}
		if all.N != 136 || all.Bytes() != parts[0].Bytes()+parts[1].Bytes()+parts[2].Bytes()+parts[3].Bytes() {
			t.Fatalf("stacked N %d, %d bytes", all.N, all.Bytes())
		}
		dst, check := guarded(t, T*all.N)
		MatMulInt4(dst, x, all, T)
		check()
		for tt := range T {
			off := 0
			for i, m := range parts {
				for n := range m.N {
					if g, w := dst[tt*all.N+off+n], want[i][tt*m.N+n]; math.Float32bits(g) != math.Float32bits(w) {
						t.Fatalf("token %d part %d output %d: %g, alone %g", tt, i, n, g, w)
					}
				}
				off += m.N
			}
		}
		for i, v := range views {
			d := make([]float32, T*v.N)
			MatMulInt4(d, x, v, T)
			for j := range d {
				if math.Float32bits(d[j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("view %d differs at %d", i, j)
				}
			}
		}
	})
	if _, _, err := ConcatInt4(); err == nil {
		t.Error("no matrices: want an error")
	}
	r := rand.New(rand.NewPCG(1, 1))
	a, b := newAWQCase(t, r, 128, 24, 64, false), newAWQCase(t, r, 128, 16, 128, false)
	ma, _ := RepackAWQ(a.qweight, a.qzeros, a.scales, 128, 24, 64)
	mb, _ := RepackAWQ(b.qweight, b.qzeros, b.scales, 128, 16, 128)
	if _, _, err := ConcatInt4(ma, ma); err == nil {
		t.Error("24 outputs before another part: want an error")
	}
	if _, _, err := ConcatInt4(mb, ma); err == nil {
		t.Error("different group sizes: want an error")
	}
}
