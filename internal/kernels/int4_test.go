package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// awqCase is a random AWQ GEMM Linear with its dequantized [N][K] weight.
type awqCase struct {
	K, N, group int
	qweight     []int32
	qzeros      []int32 // nil: symmetric
	scales      []uint16
	w           []float32
}

func newAWQCase(t testing.TB, r *rand.Rand, K, N, group int, symmetric bool) awqCase {
	t.Helper()
	codes := make([]uint8, K*N)
	for i := range codes {
		codes[i] = uint8(r.IntN(16))
	}
	groups := K / group
	zc := make([]uint8, groups*N)
	for i := range zc {
		zc[i] = uint8(r.IntN(16))
		if symmetric {
			zc[i] = 8
		}
	}
	scales := make([]uint16, groups*N)
	for i := range scales {
		scales[i] = half.F32ToF16(float32(0.005 + 0.02*r.Float64()))
	}
	qw, qz := packGEMM(codes, K, N), packGEMM(zc, groups, N)
	c := awqCase{K: K, N: N, group: group, qweight: toInt32(qw), scales: scales}
	if !symmetric {
		c.qzeros = toInt32(qz)
	}
	c.w = dequantCodes(codes, zc, scales, K, N, group)
	return c
}

// packGEMM packs rows×cols codes into AutoAWQ GEMM words: nibble i of
// word c holds column 8c+[0 2 4 6 1 3 5 7][i]. It is written out here
// rather than taken from package awq, which imports this package.
func packGEMM(codes []uint8, rows, cols int) []uint32 {
	order := [8]int{0, 2, 4, 6, 1, 3, 5, 7}
	out := make([]uint32, rows*cols/8)
	for r := range rows {
		for c := range cols / 8 {
			var word uint32
			for i, col := range order {
				word |= uint32(codes[r*cols+8*c+col]) << (4 * i)
			}
			out[r*cols/8+c] = word
		}
	}
	return out
}

// dequantCodes expands unpacked codes [K][N] and zero points [K/group][N]
// to the nn.Linear weight [N][K]: (q − z)·s in float32.
func dequantCodes(codes, zc []uint8, scales []uint16, K, N, group int) []float32 {
	w := make([]float32, N*K)
	for k := range K {
		for n := range N {
			g := (k/group)*N + n
			w[n*K+k] = (float32(codes[k*N+n]) - float32(zc[g])) * half.F16ToF32(scales[g])
		}
	}
	return w
}

// repack is RepackAWQ of the case; an error fails the test.
func (c awqCase) repack(t testing.TB) *Int4Matrix {
	t.Helper()
	m, err := RepackAWQ(c.qweight, c.qzeros, c.scales, c.K, c.N, c.group)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func toInt32(u []uint32) []int32 {
	s := make([]int32, len(u))
	for i, v := range u {
		s[i] = int32(v)
	}
	return s
}

// TestMatMulInt4Accuracy compares with float64 products of the unquantized
// activations and the dequantized weights. The coarse and residual int8
// rows reproduce each activation to within max|x|/(2·127·254) ≈ 1.6e-5 of
// its group's largest magnitude; each output is held to that bound summed
// over its groups, and to the 1e-2·Σ|x||w| contract.
func TestMatMulInt4Accuracy(t *testing.T) {
	cases := []struct {
		T, K, N, group int
		sym            bool
	}{
		{1, 128, 16, 128, false}, {3, 256, 40, 128, false}, {4, 128, 32, 128, true}, {5, 384, 200, 128, false},
		{9, 64, 8, 32, false}, {1, 96, 24, 32, true}, {7, 512, 48, 64, false}, {13, 256, 1000, 128, false},
	}
	forEachImpl(t, func(t *testing.T) {
		for _, c := range cases {
			r := rand.New(rand.NewPCG(uint64(c.K), uint64(c.N*c.T)))
			ac := newAWQCase(t, r, c.K, c.N, c.group, c.sym)
			m := ac.repack(t)
			x := randVec(r, c.T*c.K)
			x[0] = 0 // exact zeros and an all-zero group are handled
			if c.T > 2 {
				x[c.K+5] *= 300 // an outlier sets a coarse step for its group
			}
			for _, threads := range []int{1, 2} {
				SetThreads(threads)
				dst, check := guarded(t, c.T*c.N)
				MatMulInt4(dst, x, m, c.T)
				check()
				for ti := range c.T {
					for n := range c.N {
						var ref, mag, bound float64
						for g := range c.K / c.group {
							var amax, wabs float64
							for k := g * c.group; k < (g+1)*c.group; k++ {
								p := float64(x[ti*c.K+k]) * float64(ac.w[n*c.K+k])
								ref += p
								mag += math.Abs(p)
								amax = math.Max(amax, math.Abs(float64(x[ti*c.K+k])))
								wabs += math.Abs(float64(ac.w[n*c.K+k]))
							}
							bound += amax * wabs / (2 * 127 * 254)
						}
						got := float64(dst[ti*c.N+n])
						// The residual step bounds the error; 1e-6 of
						// Σ|xw| covers the float32 accumulation.
						if e := math.Abs(got - ref); e > 1e-2*mag || e > 1.01*bound+1e-6*mag {
							t.Fatalf("T=%d K=%d N=%d g=%d threads=%d: dst[%d,%d]=%g want %g (Σ|xw|=%g, bound %g)", c.T, c.K, c.N, c.group, threads, ti, n, got, ref, mag, bound)
						}
					}
				}
			}
		}
	})
	SetThreads(2)
}

func TestMatMulInt4ZeroGroup(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(3, 3))
		ac := newAWQCase(t, r, 256, 32, 128, false)
		m := ac.repack(t)
		x := make([]float32, 256)
		dst := make([]float32, 32)
		MatMulInt4(dst, x, m, 1)
		for n, v := range dst {
			if v != 0 {
				t.Fatalf("zero input gave dst[%d] = %g", n, v)
			}
		}
	})
}

// TestMatMulInt4BatchInvariance: like TestMatMulBatchInvariance, bitwise.
func TestMatMulInt4BatchInvariance(t *testing.T) {
	defer SetThreads(Threads())
	forEachImpl(t, func(t *testing.T) {
		for _, kn := range [][3]int{{1024, 72, 128}, {256, 200, 128}, {128, 8, 32}} {
			K, N, G := kn[0], kn[1], kn[2]
			r := rand.New(rand.NewPCG(uint64(K), uint64(N)))
			ac := newAWQCase(t, r, K, N, G, false)
			m := ac.repack(t)
			const maxT = 64
			x := randVec(r, maxT*K)
			SetThreads(1)
			want := make([]float32, maxT*N)
			for ti := range maxT {
				MatMulInt4(want[ti*N:(ti+1)*N], x[ti*K:(ti+1)*K], m, 1)
			}
			for _, threads := range []int{1, 2} {
				SetThreads(threads)
				for _, T := range []int{1, 3, 7, 64} {
					for start := 0; start+T <= maxT; start += max(T, 13) {
						got := make([]float32, T*N)
						MatMulInt4(got, x[start*K:(start+T)*K], m, T)
						for i, g := range got {
							if w := want[start*N+i]; math.Float32bits(g) != math.Float32bits(w) {
								t.Fatalf("K=%d N=%d T=%d threads=%d token %d col %d: %g, alone %g", K, N, T, threads, start+i/N, i%N, g, w)
							}
						}
					}
				}
			}
		}
	})
}

func TestRepackAWQErrors(t *testing.T) {
	ok := func(n int) []int32 { return make([]int32, n) }
	for _, c := range []struct {
		name        string
		qw, qz      []int32
		sc          []uint16
		K, N, group int
	}{
		{"N not multiple of 8", ok(128), ok(1), make([]uint16, 12), 128, 12, 128},
		{"group does not divide K", ok(100 * 2), ok(2), make([]uint16, 16), 100, 16, 128},
		{"group not multiple of 8", ok(120 * 2), ok(2), make([]uint16, 16), 120, 16, 60},
		{"short qweight", ok(10), ok(2), make([]uint16, 16), 128, 16, 128},
		{"short qzeros", ok(256), ok(1), make([]uint16, 16), 128, 16, 128},
		{"short scales", ok(256), ok(2), make([]uint16, 15), 128, 16, 128},
		{"zero K", nil, nil, nil, 0, 16, 128},
	} {
		if _, err := RepackAWQ(c.qw, c.qz, c.sc, c.K, c.N, c.group); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

// TestMatMulInt4AsmAgree: the assembly kernels share integer sums (exact)
// and the same float steps per group, so AVX2 and AVX-512 VNNI results are
// bitwise equal; a mismatch points at a wrong nibble, lane or group.
func TestMatMulInt4AsmAgree(t *testing.T) {
	var asm []string
	for _, n := range implNames() {
		if n != "go" {
			asm = append(asm, n)
		}
	}
	if len(asm) < 2 {
		t.Skip("fewer than two assembly implementations on this CPU")
	}
	r := rand.New(rand.NewPCG(5, 5))
	const T, K, N = 9, 512, 80
	ac := newAWQCase(t, r, K, N, 128, false)
	m := ac.repack(t)
	x := randVec(r, T*K)
	var ref []float32
	for _, name := range asm {
		restore, _ := useImpl(name)
		got := make([]float32, T*N)
		MatMulInt4(got, x, m, T)
		restore()
		if ref == nil {
			ref = got
			continue
		}
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
				t.Fatalf("%s differs from %s at %d: %g vs %g", name, asm[0], i, got[i], ref[i])
			}
		}
	}
}

// FuzzRepackAWQ feeds arbitrary shapes and tensor lengths: RepackAWQ must
// either reject them with an error or build a matrix that MatMulInt4 can
// use without going out of bounds.
func FuzzRepackAWQ(f *testing.F) {
	f.Add(uint16(128), uint16(16), uint16(128), uint16(256), uint16(2), uint16(16), false, []byte{1, 2, 3})
	f.Add(uint16(64), uint16(8), uint16(32), uint16(64), uint16(2), uint16(16), true, []byte{0xff})
	f.Add(uint16(0), uint16(8), uint16(8), uint16(0), uint16(0), uint16(0), false, []byte{})
	f.Fuzz(func(t *testing.T, K, N, group, nqw, nqz, nsc uint16, sym bool, data []byte) {
		K, N, group = K%1024, N%256, group%512
		nqw, nqz, nsc = nqw%8192, nqz%1024, nsc%8192
		fill := func(i int) byte {
			if len(data) == 0 {
				return 0
			}
			return data[i%len(data)]
		}
		qw := make([]int32, nqw)
		for i := range qw {
			qw[i] = int32(uint32(fill(i)) * 0x01010101)
		}
		var qz []int32
		if !sym {
			qz = make([]int32, nqz)
			for i := range qz {
				qz[i] = int32(uint32(fill(i+7)) * 0x01000101)
			}
		}
		sc := make([]uint16, nsc)
		for i := range sc {
			sc[i] = uint16(fill(i+3)) | 0x3000
		}
		m, err := RepackAWQ(qw, qz, sc, int(K), int(N), int(group))
		if err != nil {
			return
		}
		if m.K != int(K) || m.N != int(N) {
			t.Fatalf("matrix %d×%d from K=%d N=%d", m.K, m.N, K, N)
		}
		x := make([]float32, 5*int(K))
		for i := range x {
			x[i] = float32(int(fill(i))-128) / 64
		}
		dst, check := guarded(t, 5*int(N))
		MatMulInt4(dst, x, m, 5)
		check()
	})
}

// TestMatMulInt4BalancedChunks runs a matrix past int4BalancedBytes, whose
// few-token products are cut into chunks handed out as goroutines finish,
// on 1, 2 and 3 goroutines: bitwise the same outputs, the last partial
// block of 16 outputs included.
func TestMatMulInt4BalancedChunks(t *testing.T) {
	defer SetThreads(Threads())
	const K, N, G = 2048, 4104, 128
	r := rand.New(rand.NewPCG(7, 8))
	ac := newAWQCase(t, r, K, N, G, false)
	m := ac.repack(t)
	if m.Bytes() < int4BalancedBytes {
		t.Fatalf("matrix of %d bytes is under int4BalancedBytes (%d): the test would not cover the chunks", m.Bytes(), int4BalancedBytes)
	}
	forEachImpl(t, func(t *testing.T) {
		for _, T := range []int{1, 2, 3} {
			x := randVec(r, T*K)
			SetThreads(1)
			want := make([]float32, T*N)
			MatMulInt4(want, x, m, T)
			for _, threads := range []int{2, 3} {
				SetThreads(threads)
				got := make([]float32, T*N)
				MatMulInt4(got, x, m, T)
				for i, g := range got {
					if math.Float32bits(g) != math.Float32bits(want[i]) {
						t.Fatalf("T=%d threads=%d output %d: %g, one goroutine %g", T, threads, i, g, want[i])
					}
				}
			}
		}
	})
}

// TestInt4Interleave checks the interleaving kernels against the Go loop
// they stand in for, on every implementation that has them: 4 rows and a
// pair (a streamed token's coarse and residual rows), with guard bytes
// around the output.
func TestInt4Interleave(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		ik := &active.int4
		for _, n := range []int{2, 4} {
			kern := ik.interleave4
			if n == 2 {
				kern = ik.interleave2
			}
			if kern == nil {
				continue
			}
			for _, K := range []int{64, 128, 1024, 3072} {
				r := rand.New(rand.NewPCG(uint64(K), uint64(n)))
				src := make([]int8, n*K)
				for i := range src {
					src[i] = int8(r.IntN(256) - 128)
				}
				const pad = 64
				buf := make([]int8, n*K+2*pad)
				for i := range buf {
					buf[i] = 0x5a
				}
				kern(buf[pad:pad+n*K], src, K)
				for i := range pad {
					if buf[i] != 0x5a || buf[pad+n*K+i] != 0x5a {
						t.Fatalf("%d rows, K=%d: wrote outside its output", n, K)
					}
				}
				got := buf[pad : pad+n*K]
				for w := range K / 4 {
					for row := range n {
						for j := range 4 {
							if want := src[row*K+4*w+j]; got[4*n*w+4*row+j] != want {
								t.Fatalf("%d rows, K=%d: word %d row %d byte %d = %d, want %d", n, K, w, row, j, got[4*n*w+4*row+j], want)
							}
						}
					}
				}
			}
		}
	})
}
