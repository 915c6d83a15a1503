package gpu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

var (
	emuOnce        sync.Once
	emuDir, emuBin string
	emuErr         error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if emuDir != "" {
		os.RemoveAll(emuDir)
	}
	os.Exit(code)
}

// mmaEmulator builds testdata/mmaemu: mma.cuh's kernels compiled for the
// CPU with an emulated mma.sync (emu.h), each GPU thread a fiber.
func mmaEmulator(t *testing.T) string {
	t.Helper()
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("g++ is not installed: the tensor-core kernels are emulated with a C++20 compiler")
	}
	emuOnce.Do(func() {
		dir, err := filepath.Abs("testdata/mmaemu")
		if err != nil {
			emuErr = err
			return
		}
		// Shared by the package's tests: TestMain removes it.
		emuDir, err = os.MkdirTemp("", "mmaemu")
		if err != nil {
			emuErr = err
			return
		}
		emuBin = filepath.Join(emuDir, "mmaemu")
		out, err := exec.Command(gxx, "-std=c++20", "-O1", "-pthread", "-Wall", "-Wno-unknown-pragmas", "-o", emuBin, filepath.Join(dir, "main.cc")).CombinedOutput()
		if err != nil {
			emuErr = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if emuErr != nil {
		t.Fatalf("building the emulator: %v", emuErr)
	}
	return emuBin
}

// emuRun runs one kernel on the emulator and returns y [T][N]; with
// accum, the product is added to accumStart(i).
func emuRun(t *testing.T, bin string, awq bool, bm, T, N, K, group int, x []float32, w []uint32, scales, neg []uint16, accum bool) []float32 {
	t.Helper()
	a, acc := int32(0), int32(0)
	if awq {
		a = 1
	}
	if accum {
		acc = 1
	}
	return emuCall(t, bin, T*N, []int32{0, a, int32(bm), int32(T), int32(N), int32(K), int32(group), acc}, x, w, scales, neg)
}

// emuCall writes inputs (little-endian, in order) to the emulator's stdin
// and returns the n float32 values it writes.
func emuCall(t *testing.T, bin string, n int, inputs ...any) []float32 {
	t.Helper()
	var in bytes.Buffer
	for _, v := range inputs {
		if err := binary.Write(&in, binary.LittleEndian, v); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin)
	cmd.Stdin = &in
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("emulator: %v", err)
	}
	y := make([]float32, n)
	if len(out) != 4*n {
		t.Fatalf("emulator wrote %d bytes, want %d", len(out), 4*n)
	}
	if err := binary.Read(bytes.NewReader(out), binary.LittleEndian, y); err != nil {
		t.Fatal(err)
	}
	return y
}

// accumStart is the emulator's y[i] before a product added to it.
func accumStart(i int) float32 { return float32(i%97)/4 - 12 }

// emuActivations draws T×K activations: mostly unit normals, some large
// (so that hi and lo of the split both matter), some zero.
func emuActivations(r *rand.Rand, T, K int) []float32 {
	x := make([]float32, T*K)
	for i := range x {
		switch r.IntN(20) {
		case 0:
			x[i] = float32(r.NormFloat64() * 300)
		case 1:
		default:
			x[i] = float32(r.NormFloat64())
		}
	}
	return x
}

// checkProduct compares y with the exact product ref(t, n) = Σ_k terms
// (float64), within the bound the kernels' arithmetic guarantees: the hi/lo
// split keeps 16 significant bits of each activation (error ≤ 2^-18 of it;
// weights and codes are exact in bf16, products exact in float32), and the
// float32 sums add at most K·2^-24 of Σ|terms|. Wrong indexing (a weight,
// an activation or a scale of another row or k) is off by whole terms.
func checkProduct(t *testing.T, what string, y []float32, T, N, K int, term func(tk, n, k int) float64) {
	t.Helper()
	bound := math.Ldexp(1, -18) + float64(K)*math.Ldexp(1, -24)
	worst := 0.0
	for tk := range T {
		for n := range N {
			var sum, abs float64
			for k := range K {
				v := term(tk, n, k)
				sum += v
				abs += math.Abs(v)
			}
			got := float64(y[tk*N+n])
			if math.IsNaN(got) || math.Abs(got-sum) > bound*abs+1e-30 {
				t.Fatalf("%s: y[%d][%d] = %g, want %g (error %g, bound %g)", what, tk, n, got, sum, math.Abs(got-sum), bound*abs)
			}
			if abs > 0 {
				worst = max(worst, math.Abs(got-sum)/abs)
			}
		}
	}
	t.Logf("%s: worst error %.3g of Σ|x·w| (bound %.3g)", what, worst, bound)
}

// mmaCase is a product for the tensor-core kernels: activations, weights
// in their fragment layout, and the exact terms of each output.
type mmaCase struct {
	name           string
	awq            bool
	T, N, K, group int
	x              []float32
	w              []uint32
	scales, neg    []uint16 // AWQ: float16, bf16
	term           func(tk, n, k int) float64
}

func bf16Case(r *rand.Rand, T, N, K int) *mmaCase {
	wb := make([]uint16, N*K)
	for i := range wb {
		wb[i] = half.F32ToBF16(float32(r.NormFloat64() * 0.05))
	}
	c := &mmaCase{name: fmt.Sprintf("bf16 %d×%d×%d", T, N, K), T: T, N: N, K: K, x: emuActivations(r, T, K), w: bf16Frags(wb, N, K)}
	c.term = func(tk, n, k int) float64 { return float64(c.x[tk*K+k]) * float64(half.BF16ToF32(wb[n*K+k])) }
	return c
}

// awqCase is a product with random AWQ weights, packed as AutoAWQ does and
// laid out by awqFragsFromSource, as an upload does.
func awqCase(t *testing.T, r *rand.Rand, T, N, K, group int) *mmaCase {
	a := newAutoAWQ(t, r, K, N, group)
	c := &mmaCase{name: fmt.Sprintf("AWQ %d×%d×%d group %d", T, N, K, group), awq: true, T: T, N: N, K: K, group: group, x: emuActivations(r, T, K)}
	var err error
	if c.w, c.scales, c.neg, err = awqFragsFromSource(a.qweight, a.qzeros, a.scales, K, N, group); err != nil {
		t.Fatal(err)
	}
	c.term = func(tk, n, k int) float64 {
		g := k / group
		return float64(c.x[tk*K+k]) * float64(int(a.q[n][k])-int(a.z[n][g])) * float64(half.F16ToF32(a.s[n][g]))
	}
	return c
}

// checkMMA runs c through run (the emulator or the GPU: tile height — 16,
// 64, or 1 for the skinny kernel of steps up to 16 tokens —, token count,
// activations, accumulate → outputs): every output of the 16-token tiles
// against the exact product, the 64-token tiles (and the skinny kernel,
// up to 16 tokens) bitwise against them, one token alone (each kernel)
// bitwise against it in the batch, and the accumulating form bitwise the
// sum of the product and accumStart (the residual add it replaces).
func checkMMA(t *testing.T, c *mmaCase, run func(bm, T int, x []float32, accum bool) []float32) {
	t.Helper()
	y16 := run(16, c.T, c.x, false)
	checkProduct(t, c.name, y16, c.T, c.N, c.K, c.term)
	sameBits(t, c.name+": 64- against 16-token tiles", run(64, c.T, c.x, false), y16)
	if c.T <= 16 {
		sameBits(t, c.name+": skinny against 16-token tiles", run(1, c.T, c.x, false), y16)
	}
	i := c.T * 2 / 3
	for _, bm := range []int{16, 64, 1} {
		alone := run(bm, 1, c.x[i*c.K:(i+1)*c.K], false)
		sameBits(t, fmt.Sprintf("%s: token %d alone (%d-token tiles) against in the batch", c.name, i, bm), alone, y16[i*c.N:(i+1)*c.N])
	}
	want := make([]float32, len(y16))
	for j, v := range y16 {
		want[j] = accumStart(j) + v
	}
	sameBits(t, c.name+": accumulated", run(64, c.T, c.x, true), want)
	if c.T <= 16 {
		sameBits(t, c.name+": accumulated, skinny", run(1, c.T, c.x, true), want)
	}
}

// TestMMAEmulated runs the tensor-core products (mma.cuh) on the CPU
// emulator, for bf16 and AWQ weights laid out by bf16Frags and awqFrags,
// with partial tiles in both directions (25 and 17 n-tiles: blocks of 4
// and 8 of them; 70 and 21 tokens) and AWQ groups of 128 and 64.
func TestMMAEmulated(t *testing.T) {
	bin := mmaEmulator(t)
	r := rand.New(rand.NewPCG(7, 7))
	for _, c := range []*mmaCase{bf16Case(r, 70, 200, 256), awqCase(t, r, 21, 136, 384, 128), awqCase(t, r, 21, 136, 384, 64),
		bf16Case(r, 13, 72, 640), awqCase(t, r, 13, 72, 640, 64)} { // skinny: 5 stages, fewer than one group of loads (4, 8)
		t.Run(c.name, func(t *testing.T) {
			checkMMA(t, c, func(bm, T int, x []float32, accum bool) []float32 {
				return emuRun(t, bin, c.awq, bm, T, c.N, c.K, c.group, x, c.w, c.scales, c.neg, accum)
			})
		})
	}
}

// TestFusedProductEmulated checks that a fused product (fuse.go: rows of
// projections of the same input stacked) gives, column block by column
// block, bitwise the outputs of the separate products, for bf16 weights
// and AWQ (whose scales and zero points are laid out group-major).
func TestFusedProductEmulated(t *testing.T) {
	bin := mmaEmulator(t)
	r := rand.New(rand.NewPCG(8, 8))
	const T, K = 19, 256
	Ns := []int{64, 32, 40}
	x := emuActivations(r, T, K)
	check := func(name string, fused []float32, parts [][]float32) {
		N := len(fused) / T
		for tk := range T {
			col := 0
			for _, p := range parts {
				n := len(p) / T
				sameBits(t, fmt.Sprintf("%s: token %d, columns %d..%d", name, tk, col, col+n), fused[tk*N+col:tk*N+col+n], p[tk*n:(tk+1)*n])
				col += n
			}
		}
	}
	var ws []uint16
	var sep [][]float32
	for _, n := range Ns {
		w := make([]uint16, n*K)
		for i := range w {
			w[i] = half.F32ToBF16(float32(r.NormFloat64() * 0.05))
		}
		ws = append(ws, w...)
		sep = append(sep, emuRun(t, bin, false, 16, T, n, K, 0, x, bf16Frags(w, n, K), nil, nil, false))
	}
	check("bf16", emuRun(t, bin, false, 16, T, len(ws)/K, K, 0, x, bf16Frags(ws, len(ws)/K, K), nil, nil, false), sep)

	sep = nil
	var wss [][]uint32
	var scs, negs [][]uint16
	for _, n := range Ns {
		c := awqCase(t, r, 1, n, K, 128)
		wss, scs, negs = append(wss, c.w), append(scs, c.scales), append(negs, c.neg)
		sep = append(sep, emuRun(t, bin, true, 16, T, n, K, 128, x, c.w, c.scales, c.neg, false))
	}
	N := Ns[0] + Ns[1] + Ns[2]
	w, sc, neg := stackFrags(wss, scs, negs, Ns, K/128)
	check("AWQ", emuRun(t, bin, true, 16, T, N, K, 128, x, w, sc, neg, false), sep)
}

func sameBits(t *testing.T, what string, a, b []float32) {
	t.Helper()
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			t.Fatalf("%s: value %d is %v, and %v", what, i, a[i], b[i])
		}
	}
}
