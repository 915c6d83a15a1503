package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulInt4Unpacked: products of many rows go through the unpacked
// kernels (int4RowsU) where the implementation has them; every token's
// outputs must be bitwise those of the token multiplied alone (the
// single-row kernel), for every tile shape (4 and 2 rows, 4, 2 and 1
// blocks, an odd row in coarse mode), several passes over K, a partial
// last block, and a group count that does not divide the pass.
func TestMatMulInt4Unpacked(t *testing.T) {
	defer SetThreads(Threads())
	defer func(c int) { int4UChunkBytes = c }(int4UChunkBytes)
	defer func(n int) { int4UMinRows = n }(int4UMinRows)
	int4UMinRows = 8 // every T below, coarse (R = T) or exact (R = 2T)
	forEachImpl(t, func(t *testing.T) {
		if active.int4.unpacked == nil {
			t.Skip("no unpacked kernels in this implementation")
		}
		for _, sh := range []struct{ K, N, group int }{
			{512, 16 * 7, 128}, {384, 16 * 3, 64}, {256, 16*5 + 8, 32}, {1024, 64, 128},
		} {
			r := rand.New(rand.NewPCG(uint64(sh.K), uint64(sh.N)))
			ac := newAWQCase(t, r, sh.K, sh.N, sh.group, false)
			for _, coarse := range []bool{false, true} {
				m := ac.repack(t)
				m.Coarse = coarse
				const maxT = 37
				x := randVec(r, maxT*sh.K)
				want := make([]float32, maxT*sh.N)
				SetThreads(1)
				for ti := range maxT {
					MatMulInt4(want[ti*sh.N:(ti+1)*sh.N], x[ti*sh.K:(ti+1)*sh.K], m, 1)
				}
				for _, chunk := range []int{1, 3 * 16 * sh.group, 64 << 10} {
					int4UChunkBytes = chunk
					for _, threads := range []int{1, 2} {
						SetThreads(threads)
						for _, T := range []int{8, 9, 16, 17, 19, 37} {
							name := fmt.Sprintf("K=%d N=%d coarse=%v chunk=%d threads=%d T=%d", sh.K, sh.N, coarse, chunk, threads, T)
							got := make([]float32, T*sh.N)
							MatMulInt4(got, x[:T*sh.K], m, T)
							for i, g := range got {
								if w := want[i]; math.Float32bits(g) != math.Float32bits(w) {
									t.Fatalf("%s: token %d col %d: %g, alone %g", name, i/sh.N, i%sh.N, g, w)
								}
							}
						}
					}
				}
			}
		}
	})
}

// BenchmarkMatMulInt4Prefill compares the packed and unpacked kernels on
// one prefill-shaped product per implementation that has both.
func BenchmarkMatMulInt4Prefill(b *testing.B) {
	defer SetThreads(Threads())
	shapes := []benchShape{{64, 512, 1024}}
	if benchLarge {
		shapes = []benchShape{{512, 1024, 6144}, {512, 3072, 1024}, {512, 4096, 24576}}
	}
	for _, sh := range shapes {
		m, x, dst := int4BenchCase(b, sh)
		for _, name := range implNames() {
			restore, _ := useImpl(name)
			uk := active.int4.unpacked
			restore()
			if uk == nil {
				continue
			}
			for _, mode := range []string{"packed", "unpacked"} {
				b.Run(fmt.Sprintf("%s/%s/T=%d,K=%d,N=%d", name, mode, sh.T, sh.K, sh.N), func(b *testing.B) {
					restore, _ := useImpl(name)
					defer restore()
					if mode == "packed" {
						active.int4.unpacked = nil
						defer func() { active.int4.unpacked = uk }()
					}
					for b.Loop() {
						MatMulInt4(dst, x, m, sh.T)
					}
					sec := b.Elapsed().Seconds() / float64(b.N)
					b.ReportMetric(2*float64(sh.T*sh.K*sh.N)/sec/1e9, "GOP/s")
				})
			}
		}
	}
}
