package kernels

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// forEachImpl runs f once per implementation the CPU supports.
func forEachImpl(t *testing.T, f func(t *testing.T)) {
	t.Helper()
	for _, name := range implNames() {
		t.Run(name, func(t *testing.T) {
			restore, ok := useImpl(name)
			if !ok {
				t.Fatalf("implementation %q vanished", name)
			}
			defer restore()
			f(t)
		})
	}
}

// guard is the sentinel written around every output slice; a kernel that
// writes out of bounds changes it.
const guardLen = 19

var guardValue = float32(math.Float32frombits(0x7fc0dead)) // a NaN payload no kernel produces

// guarded returns a slice of n elements with guard words on both sides, and
// a check function that fails the test if a guard changed.
func guarded(t *testing.T, n int) ([]float32, func()) {
	t.Helper()
	buf := make([]float32, n+2*guardLen)
	for i := range buf {
		buf[i] = guardValue
	}
	inner := buf[guardLen : guardLen+n : guardLen+n]
	return inner, func() {
		t.Helper()
		for i := range guardLen {
			if math.Float32bits(buf[i]) != math.Float32bits(guardValue) {
				t.Fatalf("guard before output overwritten at %d: %v", i-guardLen, buf[i])
			}
			if j := guardLen + n + i; math.Float32bits(buf[j]) != math.Float32bits(guardValue) {
				t.Fatalf("guard after output overwritten at +%d: %v", i, buf[j])
			}
		}
	}
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// weightSet holds one random weight matrix in the three storage types with
// identical values (the bf16 values are exactly representable in f16 only
// up to range, so each type carries its own rounding of the same draw).
type weightSet struct {
	f32         []float32
	bf16, f16   []uint16
	bf16f, f16f []float32 // widened values for the float64 reference
}

func newWeights(r *rand.Rand, n int) weightSet {
	ws := weightSet{f32: make([]float32, n), bf16: make([]uint16, n), f16: make([]uint16, n),
		bf16f: make([]float32, n), f16f: make([]float32, n)}
	for i := range n {
		v := float32(r.NormFloat64() * 0.5)
		ws.f32[i] = v
		ws.bf16[i] = half.F32ToBF16(v)
		ws.f16[i] = half.F32ToF16(v)
		ws.bf16f[i] = half.BF16ToF32(ws.bf16[i])
		ws.f16f[i] = half.F16ToF32(ws.f16[i])
	}
	return ws
}

type matmulCase struct {
	name string
	run  func(dst, x []float32, ws weightSet, T, K, N int)
	ref  func(ws weightSet) []float32
}

var matmulCases = []matmulCase{
	{"f32", func(d, x []float32, ws weightSet, T, K, N int) { MatMulF32(d, x, ws.f32, T, K, N) }, func(ws weightSet) []float32 { return ws.f32 }},
	{"bf16", func(d, x []float32, ws weightSet, T, K, N int) { MatMulBF16(d, x, ws.bf16, T, K, N) }, func(ws weightSet) []float32 { return ws.bf16f }},
	{"f16", func(d, x []float32, ws weightSet, T, K, N int) { MatMulF16(d, x, ws.f16, T, K, N) }, func(ws weightSet) []float32 { return ws.f16f }},
}

// TestMatMulAccuracy checks every implementation against a float64
// reference on the same (widened) weights. Float32 accumulation over K terms
// errs by at most about K·2⁻²⁴·Σ|x||w| in the worst case and far less with
// pairwise lanes; 1e-5 of Σ|x||w| is the contract.
func TestMatMulAccuracy(t *testing.T) {
	shapes := [][3]int{{1, 1, 1}, {1, 7, 3}, {3, 16, 5}, {5, 33, 17}, {4, 64, 16}, {7, 100, 37}, {9, 257, 40}, {2, 1024, 9}, {13, 31, 70}}
	forEachImpl(t, func(t *testing.T) {
		for _, sh := range shapes {
			T, K, N := sh[0], sh[1], sh[2]
			r := rand.New(rand.NewPCG(uint64(T*1000+K), uint64(N)))
			x := randVec(r, T*K)
			ws := newWeights(r, N*K)
			for _, mc := range matmulCases {
				for _, threads := range []int{1, 2, 3} {
					SetThreads(threads)
					dst, check := guarded(t, T*N)
					mc.run(dst, x, ws, T, K, N)
					check()
					w := mc.ref(ws)
					for ti := range T {
						for n := range N {
							var ref, mag float64
							for k := range K {
								p := float64(x[ti*K+k]) * float64(w[n*K+k])
								ref += p
								mag += math.Abs(p)
							}
							got := float64(dst[ti*N+n])
							if math.Abs(got-ref) > 1e-5*mag+1e-30 {
								t.Fatalf("%s T=%d K=%d N=%d threads=%d: dst[%d,%d]=%g want %g (Σ|xw|=%g)", mc.name, T, K, N, threads, ti, n, got, ref, mag)
							}
						}
					}
				}
			}
		}
	})
	SetThreads(2)
}

// TestMatMulBatchInvariance checks that a token's outputs are bitwise the
// same whether it is computed alone or inside batches of any size, at any
// position, with any thread count.
func TestMatMulBatchInvariance(t *testing.T) {
	defer SetThreads(Threads())
	forEachImpl(t, func(t *testing.T) {
		for _, kn := range [][2]int{{1024, 37}, {100, 70}, {48, 130}, {37, 9}} {
			K, N := kn[0], kn[1]
			r := rand.New(rand.NewPCG(uint64(K), uint64(N)))
			const maxT = 64
			x := randVec(r, maxT*K)
			ws := newWeights(r, N*K)
			for _, mc := range matmulCases {
				// Reference: each token alone, one thread.
				SetThreads(1)
				want := make([]float32, maxT*N)
				for ti := range maxT {
					mc.run(want[ti*N:(ti+1)*N], x[ti*K:(ti+1)*K], ws, 1, K, N)
				}
				for _, threads := range []int{1, 2} {
					SetThreads(threads)
					for _, T := range []int{1, 3, 7, 64} {
						for start := 0; start+T <= maxT; start += max(T, 13) {
							got := make([]float32, T*N)
							mc.run(got, x[start*K:(start+T)*K], ws, T, K, N)
							for i, g := range got {
								ti, n := i/N, i%N
								if w := want[(start+ti)*N+n]; math.Float32bits(g) != math.Float32bits(w) {
									t.Fatalf("%s K=%d N=%d T=%d threads=%d token %d col %d: %x (%g), alone %x (%g)",
										mc.name, K, N, T, threads, start+ti, n, math.Float32bits(g), g, math.Float32bits(w), w)
								}
							}
						}
					}
				}
			}
		}
	})
}

func TestMatMulBadShapePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("short dst did not panic")
		}
	}()
	MatMulF32(make([]float32, 5), make([]float32, 6), make([]float32, 6), 2, 3, 3)
}

// TestMatMulConcurrentCallers runs products from several goroutines at once
// (the pool serves one, the others compute alone) and checks every result
// against a serial run.
func TestMatMulConcurrentCallers(t *testing.T) {
	defer SetThreads(Threads())
	SetThreads(2)
	const T, K, N = 5, 96, 160
	r := rand.New(rand.NewPCG(7, 7))
	x := randVec(r, T*K)
	ws := newWeights(r, N*K)
	want := make([]float32, T*N)
	MatMulBF16(want, x, ws.bf16, T, K, N)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]float32, T*N)
			for range 20 {
				MatMulBF16(got, x, ws.bf16, T, K, N)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						errs <- "concurrent result differs"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}
