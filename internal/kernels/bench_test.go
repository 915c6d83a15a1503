package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Large shapes are opt-in so that `go test -bench . -benchtime 1x` stays
// fast in CI: STREAMGUARD_BENCH_LARGE=1 adds the real model shapes and a
// 1 GiB bandwidth buffer.
var benchLarge = os.Getenv("STREAMGUARD_BENCH_LARGE") != ""

type benchShape struct{ T, K, N int }

func matmulShapes() []benchShape {
	if !benchLarge {
		return []benchShape{{1, 256, 512}, {16, 256, 512}}
	}
	return []benchShape{
		{1, 1024, 3072}, {512, 1024, 3072}, // Qwen3-0.6B gate/up
		{1, 4096, 12288}, {512, 4096, 12288}, // Qwen3-8B gate/up
	}
}

// BenchmarkMatMul reports GFLOP/s (2·T·K·N per call) and weight GB/s per
// implementation, weight type and shape, with the default thread count.
func BenchmarkMatMul(b *testing.B) {
	defer SetThreads(Threads())
	SetThreads(runtime.GOMAXPROCS(0)) // follow -test.cpu
	for _, sh := range matmulShapes() {
		r := rand.New(rand.NewPCG(1, 2))
		x := randVec(r, sh.T*sh.K)
		ws := newWeights(r, sh.K*sh.N)
		dst := make([]float32, sh.T*sh.N)
		for _, mc := range matmulCases {
			wbytes := 2 * sh.K * sh.N
			if mc.name == "f32" {
				wbytes *= 2
			}
			for _, name := range implNames() {
				if name == "go" && benchLarge && sh.T > 1 && sh.K > 1024 {
					continue // minutes per call
				}
				b.Run(fmt.Sprintf("%s/%s/T=%d,K=%d,N=%d", mc.name, name, sh.T, sh.K, sh.N), func(b *testing.B) {
					restore, _ := useImpl(name)
					defer restore()
					for b.Loop() {
						mc.run(dst, x, ws, sh.T, sh.K, sh.N)
					}
					sec := b.Elapsed().Seconds() / float64(b.N)
					b.ReportMetric(2*float64(sh.T*sh.K*sh.N)/sec/1e9, "GFLOP/s")
					b.ReportMetric(float64(wbytes)/sec/1e9, "wGB/s")
				})
			}
		}
	}
}

// BenchmarkReadBandwidth sums a []uint64 with ReadSum from 1 and 2
// goroutines: the read bandwidth that bounds single-token decode.
func BenchmarkReadBandwidth(b *testing.B) {
	size := 64 << 20
	if benchLarge {
		size = 1 << 30
	}
	buf := make([]uint64, size/8)
	for i := range buf {
		buf[i] = uint64(i)
	}
	for _, g := range []int{1, 2} {
		b.Run(fmt.Sprintf("goroutines=%d", g), func(b *testing.B) {
			b.SetBytes(int64(size))
			var sink uint64
			for b.Loop() {
				var wg sync.WaitGroup
				sums := make([]uint64, g)
				chunk := len(buf) / g
				for i := range g {
					wg.Add(1)
					go func() {
						defer wg.Done()
						sums[i] = ReadSum(buf[i*chunk : (i+1)*chunk])
					}()
				}
				wg.Wait()
				for _, s := range sums {
					sink += s
				}
			}
			if sink == 1 {
				b.Log(sink)
			}
		})
	}
}

// BenchmarkParallelOverhead measures the fixed cost of splitting a matrix
// product across Threads() goroutines, pool versus goroutine per call.
func BenchmarkParallelOverhead(b *testing.B) {
	for mode, name := range []string{"spin", "chan", "spawn"} {
		b.Run(name, func(b *testing.B) {
			defer func(old int) { poolMode = old }(poolMode)
			poolMode = mode
			var sink [64]atomic.Int64
			for b.Loop() {
				parallelRows(1024, 16, rangeFunc(func(lo, hi int) { sink[lo/16%64].Add(int64(hi - lo)) }))
			}
		})
	}
}

// BenchmarkMatMulInt4 reports GOP/s (2·T·K·N per call, as for the float
// products) and repacked-weight GB/s for AWQ g128 matrices.
// int4BenchCase is a random AWQ matrix (group 128) of the shape's K×N with
// T rows of input and room for the output.
func int4BenchCase(b *testing.B, sh benchShape) (m *Int4Matrix, x, dst []float32) {
	r := rand.New(rand.NewPCG(1, 2))
	ac := newAWQCase(b, r, sh.K, sh.N, 128, false)
	m, err := RepackAWQ(ac.qweight, ac.qzeros, ac.scales, sh.K, sh.N, 128)
	if err != nil {
		b.Fatal(err)
	}
	return m, randVec(r, sh.T*sh.K), make([]float32, sh.T*sh.N)
}

func BenchmarkMatMulInt4(b *testing.B) {
	defer SetThreads(Threads())
	SetThreads(runtime.GOMAXPROCS(0))
	for _, sh := range matmulShapes() {
		m, x, dst := int4BenchCase(b, sh)
		for _, name := range implNames() {
			if name == "go" && benchLarge && sh.T > 1 {
				continue
			}
			b.Run(fmt.Sprintf("%s/T=%d,K=%d,N=%d", name, sh.T, sh.K, sh.N), func(b *testing.B) {
				restore, _ := useImpl(name)
				defer restore()
				for b.Loop() {
					MatMulInt4(dst, x, m, sh.T)
				}
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(2*float64(sh.T*sh.K*sh.N)/sec/1e9, "GOP/s")
				b.ReportMetric(float64(m.Bytes())/sec/1e9, "wGB/s")
			})
		}
	}
}

// BenchmarkOps times the per-row operations at decode shapes: one
// attention head over 2048 cached positions (head_dim 128, GQA stride 1024),
// RMSNorm over a 4096-wide hidden state, SiLU gating over 12288.
func BenchmarkOps(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	const n, d, stride = 2048, 128, 1024
	q, k, v := randVec(r, d), randVec(r, n*stride), randVec(r, n*stride)
	out, scratch := make([]float32, d), make([]float32, n)
	h, w := randVec(r, 4096), randVec(r, 4096)
	g, u := randVec(r, 12288), randVec(r, 12288)
	for _, name := range implNames() {
		restore, _ := useImpl(name)
		b.Run("Attend/"+name, func(b *testing.B) {
			for b.Loop() {
				Attend(out, q, k, v, n, d, stride, 0.088, scratch)
			}
		})
		b.Run("RMSNorm/"+name, func(b *testing.B) {
			dst := make([]float32, len(h))
			for b.Loop() {
				RMSNorm(dst, h, w, 1e-6)
			}
		})
		b.Run("SiLUMul/"+name, func(b *testing.B) {
			dst := make([]float32, len(g))
			for b.Loop() {
				SiLUMul(dst, g, u)
			}
		})
		restore()
	}
}

// BenchmarkDecodeStream runs single-token products over a rotating set of
// weight matrices larger than the last-level cache, as a decode step does
// over a model's layers, so wGB/s compares with BenchmarkReadBandwidth.
// Shapes are Qwen3-8B gate/up (4096×12288); the set is 640 MiB with
// STREAMGUARD_BENCH_LARGE=1, else 8 MiB.
func BenchmarkDecodeStream(b *testing.B) {
	defer SetThreads(Threads())
	SetThreads(runtime.GOMAXPROCS(0))
	K, N, total := 4096, 12288, 8<<20
	if !benchLarge {
		K, N = 512, 1024
	} else {
		total = 640 << 20
	}
	r := rand.New(rand.NewPCG(9, 9))
	x := randVec(r, K)
	dst := make([]float32, N)
	b.Run("bf16", func(b *testing.B) {
		mats := make([][]uint16, max(1, total/(2*K*N)))
		for i := range mats {
			mats[i] = make([]uint16, K*N)
			for j := range mats[i] {
				mats[i][j] = 0x3c00 | uint16(r.Uint32()&0x80ff) // ±[0.0078, 0.0156)
			}
		}
		i := 0
		for b.Loop() {
			MatMulBF16(dst, x, mats[i%len(mats)], 1, K, N)
			i++
		}
		b.ReportMetric(float64(2*K*N)*float64(b.N)/b.Elapsed().Seconds()/1e9, "wGB/s")
	})
	b.Run("int4", func(b *testing.B) {
		mats := make([]*Int4Matrix, max(1, total/(K*N/2)))
		for i := range mats {
			mats[i] = randomInt4(b, r, K, N)
		}
		i := 0
		for b.Loop() {
			MatMulInt4(dst, x, mats[i%len(mats)], 1)
			i++
		}
		b.ReportMetric(float64(mats[0].Bytes())*float64(b.N)/b.Elapsed().Seconds()/1e9, "wGB/s")
	})
}

// randomInt4 is a repacked AWQ matrix of random codes, zero points and
// scales in ±[2⁻¹⁵, 2⁻¹⁴) (so products stay finite), group 128.
func randomInt4(b *testing.B, r *rand.Rand, K, N int) *Int4Matrix {
	groups := K / 128
	qw := make([]int32, K*N/8)
	for j := range qw {
		qw[j] = int32(r.Uint32())
	}
	qz := make([]int32, groups*N/8)
	for j := range qz {
		qz[j] = int32(r.Uint32())
	}
	sc := make([]uint16, groups*N)
	for j := range sc {
		sc[j] = 0x2000 | uint16(r.Uint32()&0x3ff)
	}
	m, err := RepackAWQ(qw, qz, sc, K, N, 128)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkDecodeLayers runs the single-token products of Qwen3-0.6B
// decoder layers in order (q/k/v stacked 1024×4096, o 2048×1024, gate/up
// stacked 1024×6144, down 3072×1024) over a set of layers larger than the
// last-level cache: 56 layers (461 MB) with STREAMGUARD_BENCH_LARGE=1, else
// one. The 0.6B's blocks of codes are short (8–24 KiB per 16 outputs), so
// this is where a product's start-up costs show; wGB/s compares with
// BenchmarkReadBandwidth.
func BenchmarkDecodeLayers(b *testing.B) {
	defer SetThreads(Threads())
	SetThreads(runtime.GOMAXPROCS(0))
	r := rand.New(rand.NewPCG(9, 10))
	shapes := [][2]int{{1024, 4096}, {2048, 1024}, {1024, 6144}, {3072, 1024}}
	layers := 1
	if benchLarge {
		layers = 56
	}
	var mats []*Int4Matrix
	bytes := 0
	for i := range 4 * layers {
		m := randomInt4(b, r, shapes[i%4][0], shapes[i%4][1])
		mats = append(mats, m)
		bytes += m.Bytes()
	}
	x := randVec(r, 3072)
	dst := make([]float32, 6144)
	for b.Loop() {
		for _, m := range mats {
			MatMulInt4(dst[:m.N], x[:m.K], m, 1)
		}
	}
	b.ReportMetric(float64(bytes)*float64(b.N)/b.Elapsed().Seconds()/1e9, "wGB/s")
}

// BenchmarkInt4Interleave times the interleaving of a token's coarse and
// residual rows (a pair, before every product of a decode step) and of 4
// rows, by the implementation's kernel and by the Go loop it stands in for.
func BenchmarkInt4Interleave(b *testing.B) {
	for _, K := range []int{1024, 3072} {
		for _, rows := range []int{2, 4} {
			acts := new(int4Acts)
			acts.prepare(rows, K, 128)
			for _, how := range []string{"kernel", "go"} {
				ik := active.int4
				if how == "go" {
					ik.interleave2, ik.interleave4 = nil, nil
				}
				b.Run(fmt.Sprintf("rows=%d/K=%d/%s", rows, K, how), func(b *testing.B) {
					for b.Loop() {
						acts.interleave(&ik, 0, rows)
					}
				})
			}
		}
	}
}
