package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// kvCase is one random attention problem: rows × g query heads over
// n0+rows−1 cached positions, with the cache in every storage type.
type kvCase struct {
	rows, g, n0, d, stride, qstride, ostride int
	q                                        []float32
	k32, v32                                 []float32 // float32 values
	k16, v16                                 []uint16  // their bfloat16 rounding
	kw, vw                                   []float32 // the bfloat16 values widened
	k8, v8                                   []int8    // int8 codes per position
	ks, vs                                   []float32 // and their scales
	kq, vq                                   []float32 // the int8 values dequantized
}

func newKVCase(r *rand.Rand, rows, g, n0, d int) *kvCase {
	c := &kvCase{rows: rows, g: g, n0: n0, d: d, stride: d + 8*(n0%2),
		qstride: 2*g*d + 16, ostride: g*d + 8*(rows%2)}
	n := n0 + rows - 1
	c.q = randVec(r, (rows-1)*c.qstride+g*d)
	c.k32, c.v32 = randVec(r, n*c.stride), randVec(r, n*c.stride)
	// Give keys and values a spread of magnitudes per position, as a
	// real cache has, so the per-position scales matter.
	for j := range n {
		f := float32(0.1 + 3*r.Float64())
		for i := range d {
			c.k32[j*c.stride+i] *= f
			c.v32[j*c.stride+i] /= f
		}
	}
	c.k16, c.v16 = make([]uint16, len(c.k32)), make([]uint16, len(c.v32))
	ToBF16(c.k16, c.k32)
	ToBF16(c.v16, c.v32)
	c.kw, c.vw = widenAll(c.k16), widenAll(c.v16)
	c.k8, c.v8 = make([]int8, len(c.k32)), make([]int8, len(c.v32))
	c.ks, c.vs = make([]float32, n), make([]float32, n)
	c.kq, c.vq = make([]float32, len(c.k32)), make([]float32, len(c.v32))
	for j := range n {
		o := j * c.stride
		c.ks[j] = QuantizeInt8(c.k8[o:o+d], c.k32[o:o+d])
		c.vs[j] = QuantizeInt8(c.v8[o:o+d], c.v32[o:o+d])
		for i := range d {
			c.kq[o+i] = c.ks[j] * float32(c.k8[o+i])
			c.vq[o+i] = c.vs[j] * float32(c.v8[o+i])
		}
	}
	return c
}

func widenAll(s []uint16) []float32 {
	out := make([]float32, len(s))
	for i, b := range s {
		out[i] = half.BF16ToF32(b)
	}
	return out
}

// kvShapes are the attention shapes the tests walk: head sizes that do
// and do not fit the vector loops, key counts around the chunk and 4-key
// boundaries, and blocks of every tile pattern.
func kvShapes(f func(rows, g, n0, d int)) {
	for _, d := range []int{128, 64, 48, 24, 5} {
		chunk := max(4, attnChunkBytes/(2*d))
		for _, n0 := range []int{1, 2, 5, chunk - 1, chunk + 3, 2*chunk + 6} {
			for _, rg := range [][2]int{{1, 1}, {1, 2}, {1, 3}, {1, 4}, {8, 2}, {4, 4}, {5, 1}, {3, 2}, {2, 3}} {
				f(rg[0], rg[1], n0, d)
			}
		}
	}
}

const kvScale = 0.088

// TestAttendBlockKVMatchesAttendKV: for both narrow caches, every query
// head of every row of a block gets bitwise what the single-head kernel
// (AttendBF16, AttendInt8) computes for it over the row's causal prefix,
// on every implementation; nothing outside the block's outputs is written.
// This is what keeps a stream's result independent of the rows it is
// batched and chunked with.
func TestAttendBlockKVMatchesAttendKV(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(8, 8))
		kvShapes(func(rows, g, n0, d int) {
			c := newKVCase(r, rows, g, n0, d)
			for _, typ := range []string{"bf16", "int8"} {
				span := (rows-1)*c.ostride + g*d
				out, check := guarded(t, span)
				const sentinel = float32(-7.25)
				for i := range out {
					out[i] = sentinel
				}
				scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
				if typ == "bf16" {
					AttendBlockBF16(out, c.ostride, c.q, c.qstride, rows, g, c.k16, c.v16, n0, d, c.stride, kvScale, scratch)
				} else {
					AttendBlockInt8(out, c.ostride, c.q, c.qstride, rows, g, c.k8, c.v8, c.ks, c.vs, n0, d, c.stride, kvScale, scratch)
				}
				check()
				for row := range rows {
					for h := range g {
						o, qi := row*c.ostride+h*d, row*c.qstride+h*d
						n := n0 + row
						want := make([]float32, d)
						if typ == "bf16" {
							AttendBF16(want, c.q[qi:qi+d], c.k16, c.v16, n, d, c.stride, kvScale, make([]float32, n))
						} else {
							AttendInt8(want, c.q[qi:qi+d], c.k8, c.v8, c.ks, c.vs, n, d, c.stride, kvScale, make([]float32, n))
						}
						for j := range want {
							if math.Float32bits(out[o+j]) != math.Float32bits(want[j]) {
								t.Fatalf("%s d=%d n0=%d rows=%d g=%d: row %d head %d out[%d] = %g, single head %g", typ, d, n0, rows, g, row, h, j, out[o+j], want[j])
							}
						}
					}
					if row < rows-1 {
						for i := row*c.ostride + g*d; i < (row+1)*c.ostride; i++ {
							if out[i] != sentinel {
								t.Fatalf("%s d=%d n0=%d rows=%d g=%d: wrote out[%d] between rows", typ, d, n0, rows, g, i)
							}
						}
					}
				}
			}
		})
	})
}

// TestAttendBF16MatchesFloat32: a bfloat16 cache is widened exactly and
// then goes through the float32 kernels' own operations, so where both
// take the same path (always in pure Go; with assembly, head sizes that
// fill whole vectors) AttendBlockBF16 is bitwise AttendBlock over the
// widened values. Elsewhere the float32 kernels finish a head's tail in
// a different order, and the two agree to float32 rounding.
// checkHeadsAlone runs a several-heads kernel on every implementation for
// 1 to 3 heads of d = 128, groups of 1, 2 and 4 query heads and n
// positions from ns, with random queries and caches (fill makes head h's
// and returns the two calls): all(out, q) over every head at once, and
// alone(h, out, q) for head h by itself. Every head's output must be
// bitwise the same both ways, and nothing written past the outputs.
func checkHeadsAlone(t *testing.T, seed uint64, ns []int, fill func(r *rand.Rand, H, g, n, d int) (all func(out, q []float32), alone func(h int, out, q []float32))) {
	r := rand.New(rand.NewPCG(seed, seed+1))
	const d = 128
	forEachImpl(t, func(t *testing.T) {
		for _, H := range []int{1, 2, 3} {
			for _, g := range []int{1, 2, 4} {
				for _, n := range ns {
					q := randVec(r, H*g*d)
					all, alone := fill(r, H, g, n, d)
					got := make([]float32, H*g*d+1)
					got[H*g*d] = 42
					all(got, q)
					if got[H*g*d] != 42 {
						t.Fatalf("H=%d g=%d n=%d: wrote past the outputs", H, g, n)
					}
					want := make([]float32, g*d)
					for h := range H {
						alone(h, want, q[h*g*d:])
						for i, w := range want {
							if o := got[h*g*d+i]; math.Float32bits(o) != math.Float32bits(w) {
								t.Fatalf("H=%d g=%d n=%d head %d: out[%d] = %g, alone %g", H, g, n, h, i, o, w)
							}
						}
					}
				}
			}
		}
	})
}

// mustPanic fails t unless f panics.
func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

// TestAttendHeadsBF16 checks that reading several heads in turns (with
// the next turn prefetched) leaves every head's output bitwise what
// AttendBlockBF16 gives it alone, at positions around the 8-key tiles
// and the chunks, and that inconsistent lengths panic.
func TestAttendHeadsBF16(t *testing.T) {
	checkHeadsAlone(t, 5, []int{1, 7, 8, 9, 63, 64, 65, 130, 300}, func(r *rand.Rand, H, g, n, d int) (func(out, q []float32), func(int, []float32, []float32)) {
		scale := float32(1 / math.Sqrt(float64(d)))
		k, v := make([][]uint16, H), make([][]uint16, H)
		for h := range H {
			k[h], v[h] = make([]uint16, n*d), make([]uint16, n*d)
			ToBF16(k[h], randVec(r, n*d))
			ToBF16(v[h], randVec(r, n*d))
		}
		return func(out, q []float32) {
				AttendHeadsBF16(out, q, g, k, v, n, d, scale, make([]float32, AttendHeadsScratch(H, g, n, d)))
			}, func(h int, out, q []float32) {
				AttendBlockBF16(out, g*d, q, g*d, 1, g, k[h], v[h], n, d, d, scale, make([]float32, AttendBlockScratch(1, g, n, d)))
			}
	})
	mustPanic(t, "values for fewer heads", func() {
		AttendHeadsBF16(make([]float32, 256), make([]float32, 256), 1, [][]uint16{make([]uint16, 128)}, [][]uint16{}, 1, 128, 1, make([]float32, 1))
	})
	mustPanic(t, "short keys", func() {
		AttendHeadsBF16(make([]float32, 256), make([]float32, 256), 2, [][]uint16{make([]uint16, 127)}, [][]uint16{make([]uint16, 128)}, 1, 128, 1, make([]float32, 2))
	})
	mustPanic(t, "short outputs", func() {
		AttendHeadsBF16(make([]float32, 128), make([]float32, 256), 2, [][]uint16{make([]uint16, 128)}, [][]uint16{make([]uint16, 128)}, 1, 128, 1, make([]float32, 2))
	})
}

// TestAttendHeadsInt8 is TestAttendHeadsBF16 for int8 caches: every
// head's output bitwise what AttendBlockInt8 gives it alone.
func TestAttendHeadsInt8(t *testing.T) {
	checkHeadsAlone(t, 7, []int{1, 7, 8, 9, 127, 128, 129, 300}, func(r *rand.Rand, H, g, n, d int) (func(out, q []float32), func(int, []float32, []float32)) {
		scale := float32(1 / math.Sqrt(float64(d)))
		k, v := make([][]int8, H), make([][]int8, H)
		ks, vs := make([][]float32, H), make([][]float32, H)
		for h := range H {
			k[h], v[h] = make([]int8, n*d), make([]int8, n*d)
			ks[h], vs[h] = make([]float32, n), make([]float32, n)
			kf, vf := randVec(r, n*d), randVec(r, n*d)
			for j := range n {
				ks[h][j] = QuantizeInt8(k[h][j*d:(j+1)*d], kf[j*d:(j+1)*d])
				vs[h][j] = QuantizeInt8(v[h][j*d:(j+1)*d], vf[j*d:(j+1)*d])
			}
		}
		return func(out, q []float32) {
				AttendHeadsInt8(out, q, g, k, v, ks, vs, n, d, scale, make([]float32, AttendHeadsScratch(H, g, n, d)))
			}, func(h int, out, q []float32) {
				AttendBlockInt8(out, g*d, q, g*d, 1, g, k[h], v[h], ks[h], vs[h], n, d, d, scale, make([]float32, AttendBlockScratch(1, g, n, d)))
			}
	})
	mustPanic(t, "a head with too few scales", func() {
		AttendHeadsInt8(make([]float32, 128), make([]float32, 128), 1, [][]int8{make([]int8, 256)}, [][]int8{make([]int8, 256)},
			[][]float32{make([]float32, 1)}, [][]float32{make([]float32, 2)}, 2, 128, 1, make([]float32, AttendHeadsScratch(1, 1, 2, 128)))
	})
}

func TestAttendBF16MatchesFloat32(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(9, 9))
		lanes := active.bf16KV.lanes
		kvShapes(func(rows, g, n0, d int) {
			c := newKVCase(r, rows, g, n0, d)
			scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
			span := (rows-1)*c.ostride + g*d
			got, want := make([]float32, span), make([]float32, span)
			AttendBlockBF16(got, c.ostride, c.q, c.qstride, rows, g, c.k16, c.v16, n0, d, c.stride, kvScale, scratch)
			AttendBlock(want, c.ostride, c.q, c.qstride, rows, g, c.kw, c.vw, n0, d, c.stride, kvScale, scratch)
			if lanes == 0 || d%lanes == 0 {
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("d=%d n0=%d rows=%d g=%d: out[%d] = %g, float32 kernels %g", d, n0, rows, g, i, got[i], want[i])
					}
				}
				return
			}
			for i := range got {
				if math.Abs(float64(got[i]-want[i])) > 1e-5*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("d=%d n0=%d rows=%d g=%d: out[%d] = %g, float32 kernels %g", d, n0, rows, g, i, got[i], want[i])
				}
			}
		})
	})
}

// refAttend is single-head attention in float64.
func refAttend(q []float32, k, v []float32, n, d, stride int, scale float64) []float64 {
	s := make([]float64, n)
	m := math.Inf(-1)
	for j := range n {
		var dot float64
		for i := range d {
			dot += float64(q[i]) * float64(k[j*stride+i])
		}
		s[j] = scale * dot
		m = max(m, s[j])
	}
	var sum float64
	for j := range s {
		s[j] = math.Exp(s[j] - m)
		sum += s[j]
	}
	out := make([]float64, d)
	for j := range n {
		for i := range d {
			out[i] += s[j] / sum * float64(v[j*stride+i])
		}
	}
	return out
}

// quantizedQuery is the query an int8 cache's scores use: its int8 codes
// times their scale (QuantizeInt8).
func quantizedQuery(q []float32) []float32 {
	codes := make([]int8, len(q))
	s := QuantizeInt8(codes, q)
	out := make([]float32, len(q))
	for i, c := range codes {
		out[i] = s * float32(c)
	}
	return out
}

// TestAttendKVMatchesReference: on every implementation, bfloat16 and
// int8 attention equal float64 attention over the values the cache holds
// (widened bfloat16, scale·code; for int8 the query's codes too, see
// attend_i8.go) to float32 rounding: 1e-5 of the output's
// scale (the values are O(1) and a softmax-weighted mean stays there; the
// float32 sums of up to a few hundred terms round at about 1e-6). The
// pure-Go loops and the assembly are thereby checked against each other.
func TestAttendKVMatchesReference(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(10, 10))
		for _, d := range []int{128, 64, 24, 5} {
			for _, n := range []int{1, 3, 4, 17, 300} {
				c := newKVCase(r, 1, 1, n, d)
				q := c.q[:d]
				for _, typ := range []string{"bf16", "int8"} {
					got := make([]float32, d)
					var want []float64
					if typ == "bf16" {
						AttendBF16(got, q, c.k16, c.v16, n, d, c.stride, kvScale, make([]float32, n))
						want = refAttend(q, c.kw, c.vw, n, d, c.stride, kvScale)
					} else {
						AttendInt8(got, q, c.k8, c.v8, c.ks, c.vs, n, d, c.stride, kvScale, make([]float32, n))
						want = refAttend(quantizedQuery(q), c.kq, c.vq, n, d, c.stride, kvScale)
					}
					for i := range got {
						if math.Abs(float64(got[i])-want[i]) > 1e-5*(1+math.Abs(want[i])) {
							t.Fatalf("%s d=%d n=%d: out[%d] = %g, float64 %g", typ, d, n, i, got[i], want[i])
						}
					}
				}
			}
		}
	})
}

// TestQuantizeInt8: codes within ±127, the scale max|x|/127, every value
// within half a step of scale·code (exact halves rounding to even), zero
// and NaN vectors handled.
func TestQuantizeInt8(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	for range 200 {
		x := randVec(r, 1+r.IntN(200))
		for i := range x {
			x[i] *= float32(math.Exp(4 * r.NormFloat64()))
		}
		codes := make([]int8, len(x))
		s := QuantizeInt8(codes, x)
		var amax float32
		for _, v := range x {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		if s != amax/127 {
			t.Fatalf("scale %g, want %g", s, amax/127)
		}
		for i, v := range x {
			if codes[i] < -127 {
				t.Fatalf("code %d", codes[i])
			}
			if e := math.Abs(float64(v) - float64(s)*float64(codes[i])); e > 0.5*float64(s)*(1+1e-6) {
				t.Fatalf("x[%d] = %g: code %d·%g is %g away (step %g)", i, v, codes[i], s, e, s)
			}
		}
	}
	codes := []int8{5, 5, 5}
	if s := QuantizeInt8(codes, []float32{0, 0, 0}); s != 0 || codes[0] != 0 || codes[2] != 0 {
		t.Fatalf("zeros: scale %g codes %v", s, codes)
	}
	// 127/2 = 63.5 steps rounds to 64 (even), -0.5 steps to 0.
	if s := QuantizeInt8(codes, []float32{127, 63.5, -0.5}); s != 1 || codes[0] != 127 || codes[1] != 64 || codes[2] != 0 {
		t.Fatalf("ties: scale %g codes %v", s, codes)
	}
	if s := QuantizeInt8(codes, []float32{1, float32(math.NaN()), 2}); !math.IsNaN(float64(s)) {
		t.Fatalf("NaN input: scale %g", s)
	}
}

// BenchmarkAttendKV: one decode step's attention for one key/value head
// of the 0.6B shape (2 query heads, d 128) over 4000 cached positions, in
// each cache type: the bytes read are 1 : 1/2 : ~1/4.
func BenchmarkAttendKV(b *testing.B) {
	const rows, g, n0, d = 1, 2, 4000, 128
	r := rand.New(rand.NewPCG(1, 1))
	c := newKVCase(r, rows, g, n0, d) // n0 even: stride d, packed
	out := make([]float32, g*d)
	scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
	for _, name := range implNames() {
		restore, _ := useImpl(name)
		b.Run(name+"/f32", func(b *testing.B) {
			for b.Loop() {
				AttendBlock(out, g*d, c.q, g*d, rows, g, c.k32, c.v32, n0, d, d, kvScale, scratch)
			}
		})
		b.Run(name+"/bf16", func(b *testing.B) {
			for b.Loop() {
				AttendBlockBF16(out, g*d, c.q, g*d, rows, g, c.k16, c.v16, n0, d, d, kvScale, scratch)
			}
		})
		b.Run(name+"/int8", func(b *testing.B) {
			for b.Loop() {
				AttendBlockInt8(out, g*d, c.q, g*d, rows, g, c.k8, c.v8, c.ks, c.vs, n0, d, d, kvScale, scratch)
			}
		})
		restore()
	}
}

// TestToBF16: every implementation stores half.F32ToBF16's bits: ties to
// even both ways, the largest finite values rounding to infinity,
// subnormals (kept, not flushed), signed zeros and infinities, quiet and
// signalling NaNs of both signs, and random bit patterns, at lengths that
// leave every tail.
func TestToBF16(t *testing.T) {
	special := []uint32{
		0x00000000, 0x80000000, 0x7f800000, 0xff800000, // ±0, ±Inf
		0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0x7f80ffff, // NaNs
		0x3f808000, 0x3f818000, 0xbf808000, 0x3f807fff, 0x3f808001, // ties to even, just below and above
		0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff, // the largest finite values
		0x00000001, 0x00008000, 0x00018000, 0x007fffff, 0x807fffff, 0x00800000, // subnormals, smallest normal
	}
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 128, 1000} {
		x := make([]float32, n)
		for i := range x {
			if i < len(special) && n >= 16 {
				x[i] = math.Float32frombits(special[(i+n)%len(special)])
			} else {
				x[i] = math.Float32frombits(r.Uint32())
			}
		}
		want := make([]uint16, n)
		for i, f := range x {
			want[i] = half.F32ToBF16(f)
		}
		forEachImpl(t, func(t *testing.T) {
			got := make([]uint16, n+1)
			got[n] = 0xabcd
			ToBF16(got, x)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("n=%d: x[%d] = %#08x gave %#04x, want %#04x", n, i, math.Float32bits(x[i]), got[i], want[i])
				}
			}
			if got[n] != 0xabcd {
				t.Fatalf("n=%d: wrote past the input's length", n)
			}
		})
	}
}

// BenchmarkToBF16 converts one 0.6B decode step's keys and values (28
// layers × 8 heads × 2 × 128 values) in calls of one head's 128, as the
// bfloat16 cache stores them.
func BenchmarkToBF16(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	x := randVec(r, 28*8*2*128)
	dst := make([]uint16, len(x))
	for _, name := range implNames() {
		b.Run(name, func(b *testing.B) {
			restore, _ := useImpl(name)
			defer restore()
			for b.Loop() {
				for i := 0; i < len(x); i += 128 {
					ToBF16(dst[i:i+128], x[i:i+128])
				}
			}
			b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gvalues/s")
		})
	}
}
