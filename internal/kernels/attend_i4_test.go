package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// randI4 returns n bytes of random 4-bit codes in [-7, 7] (plus the -8
// that QuantizeInt4 never writes but a kernel must handle like any code).
func randI4(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		lo, hi := r.IntN(16)-8, r.IntN(16)-8
		b[i] = byte(lo&0xF) | byte(hi<<4)
	}
	return b
}

// TestI4DotMatchesGo: every implementation's 4-bit score kernel gives
// bitwise the pure-Go loop's scores, and the pure-Go loop is the integer
// dot product of the decoded codes; over key counts around the kernels'
// tiles, head sizes that do and do not fit their vectors and padded
// strides. Nothing past s[:n] is written.
func TestI4DotMatchesGo(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(43, 43))
		for _, d := range []int{128, 256, 64, 32, 16, 2} {
			for _, n := range []int{1, 3, 4, 5, 15, 16, 17, 33, 70} {
				stride := d/2 + 8*r.IntN(2)
				q := make([]int8, d)
				for i := range q {
					q[i] = int8(r.IntN(255) - 127)
				}
				k := randI4(r, (n-1)*stride+d/2)
				if n > 2 { // extremes: key codes all -8 against a query all -127
					for i := range q {
						q[i] = -127
					}
					for i := range d / 2 {
						k[2*stride+i] = 0x88
					}
				}
				var sum int32
				for _, c := range q {
					sum += int32(c)
				}
				const mult = float32(0.0123)
				got, check := guarded(t, n)
				active.i4KV.dotN(got, q, k, n, d, stride, mult, 8*sum)
				check()
				if a := &active.i4KV; a.dotQ2 != nil && d%a.dotLanes == 0 {
					checkTwoHeads(t, q, n, mult, 8, func(s []float32, sstride int, q2 []int8, m0, m1 float32, b0, b1 int32) {
						a.dotQ2(&s[0], sstride, &q2[0], &k[0], n, d, stride, m0, m1, b0, b1)
					}, func(s []float32, qh []int8, m float32, b int32) { a.dotN(s, qh, k, n, d, stride, m, b) })
				}
				want := make([]float32, n)
				i4DotGo(want, q, k, n, d, stride, mult)
				for j := range want {
					var acc int32
					for i := range d {
						c := lo4(k[j*stride+i%(d/2)])
						if i >= d/2 {
							c = hi4(k[j*stride+i-d/2])
						}
						acc += int32(q[i]) * c
					}
					if want[j] != mult*float32(acc) {
						t.Fatalf("d=%d n=%d: pure Go s[%d] = %g, decoded codes give %g", d, n, j, want[j], mult*float32(acc))
					}
					if math.Float32bits(got[j]) != math.Float32bits(want[j]) {
						t.Fatalf("d=%d n=%d stride=%d: s[%d] = %g, pure Go %g", d, n, stride, j, got[j], want[j])
					}
				}
			}
		}
	})
}

// TestI4SumMatchesGo: the float weighted sums of every implementation
// agree with the pure-Go loop (to float32 rounding: the vector kernels fuse
// the multiply and add), starting fresh or adding.
func TestI4SumMatchesGo(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(44, 44))
		a := &active.i4KV
		for _, d := range []int{128, 256, 64, 32, 16, 2} {
			for _, n := range []int{1, 2, 7, 40} {
				stride := d/2 + 8*r.IntN(2)
				v := randI4(r, (n-1)*stride+d/2)
				p := randVec(r, n)
				init := randVec(r, d)
				for _, add := range []bool{false, true} {
					want := make([]float32, d)
					got, check := guarded(t, d)
					if add {
						copy(want, init)
						copy(got, init)
					}
					sumI4Go(want, p, v, n, d, stride, add)
					a.sumN(got, p, v, n, d, stride, add)
					check()
					for i := range d {
						if e := math.Abs(float64(got[i] - want[i])); e > 1e-5*(1+math.Abs(float64(want[i]))) {
							t.Fatalf("d=%d n=%d add=%v: out[%d] = %g, pure Go %g", d, n, add, i, got[i], want[i])
						}
					}
				}
			}
		}
	})
}

// TestI4SumW16: the integer weighted sums (where an implementation has
// them) set out to exactly scale·float32(Σ_j w_j·c_j), the integer sum
// computed here in int64, and add it with one fused multiply-add; the
// two-query kernel gives bitwise what the one-query kernel gives each
// query; odd n reads but ignores w[n]; extreme weights and codes
// (32767 against -8) over a whole chunk do not overflow.
func TestI4SumW16(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		a := &active.i4KV
		if a.sumW16 == nil {
			t.Skip("no integer sums in this implementation")
		}
		r := rand.New(rand.NewPCG(50, 50))
		for _, d := range []int{128, 256, 64, 32} {
			for _, n := range []int{1, 2, 3, 16, 33, w16Chunk} {
				stride := d/2 + 16*r.IntN(2)
				v := randI4(r, (n-1)*stride+d/2)
				wstride := n + 3
				w := make([]int16, wstride+n+1)
				for i := range w {
					w[i] = int16(r.IntN(32768))
				}
				if n == w16Chunk { // the largest sums a chunk can make
					for i := range w {
						w[i] = 32767
					}
					for i := range v {
						v[i] = 0x88
					}
				}
				const s0, s1 = float32(1.5e-5), float32(-2.5e-6)
				want := make([]float32, 2*d)
				for h, sc := range []float32{s0, s1} {
					for i := range d {
						var acc int64
						for j := range n {
							b := v[j*stride+i%(d/2)]
							c := lo4(b)
							if i >= d/2 {
								c = hi4(b)
							}
							acc += int64(w[h*wstride+j]) * int64(c)
						}
						want[h*d+i] = sc * float32(acc)
					}
				}
				one, check := guarded(t, d)
				a.sumW16(&one[0], &w[0], 0, &v[0], n, d, stride, s0, 0)
				check()
				for i := range d {
					if math.Float32bits(one[i]) != math.Float32bits(want[i]) {
						t.Fatalf("d=%d n=%d: out[%d] = %g, want %g", d, n, i, one[i], want[i])
					}
				}
				two, check2 := guarded(t, 2*d)
				a.sumW16Q2(&two[0], &w[0], wstride, &v[0], n, d, stride, s0, s1)
				check2()
				for i := range two {
					if math.Float32bits(two[i]) != math.Float32bits(want[i]) {
						t.Fatalf("d=%d n=%d: two-query out[%d] = %g, want %g", d, n, i, two[i], want[i])
					}
				}
				// Adding: fma(float32(sum), scale, out).
				init := randVec(r, 2*d)
				copy(one, init)
				copy(two, init)
				a.sumAddW16(&one[0], &w[0], 0, &v[0], n, d, stride, s0, 0)
				a.sumAddW16Q2(&two[0], &w[0], wstride, &v[0], n, d, stride, s0, s1)
				for i := range two {
					if i < d && math.Float32bits(one[i]) != math.Float32bits(two[i]) {
						t.Fatalf("d=%d n=%d: adding, one-query out[%d] = %g, two-query %g", d, n, i, one[i], two[i])
					}
					sum := float64(want[i]) + float64(init[i])
					if e := math.Abs(float64(two[i]) - sum); e > 1e-6*(1+math.Abs(sum)) {
						t.Fatalf("d=%d n=%d: adding, out[%d] = %g, want %g", d, n, i, two[i], sum)
					}
				}
			}
		}
	})
}

// i4Case is a 4-bit cache of rows+n0-1 positions and what the kernels
// effectively read from it.
type i4Case struct {
	k, v   []byte
	ks, vs []float32
	kq, vq []float32 // dequantized (rotated back), d apart
	stride int
}

func newI4Case(c *kvCase) *i4Case {
	n, d := c.n0+c.rows-1, c.d
	x := &i4Case{stride: d/2 + 4*(c.n0%2)}
	x.k, x.v = make([]byte, n*x.stride), make([]byte, n*x.stride)
	x.ks, x.vs = make([]float32, n), make([]float32, n)
	x.kq, x.vq = make([]float32, n*d), make([]float32, n*d)
	for j := range n {
		o := j * x.stride
		x.ks[j] = QuantizeInt4(x.k[o:], c.k32[j*c.stride:][:d], nil)
		x.vs[j] = QuantizeInt4(x.v[o:], c.v32[j*c.stride:][:d], nil)
		DequantizeInt4(x.kq[j*d:(j+1)*d], x.k[o:], x.ks[j])
		DequantizeInt4(x.vq[j*d:(j+1)*d], x.v[o:], x.vs[j])
	}
	return x
}

// attendRef64 is single-head attention in float64 over keys and values d
// apart.
func attendRef64(q []float64, k, v []float32, n, d int, scale float64) []float64 {
	s := make([]float64, n)
	m := math.Inf(-1)
	for j := range n {
		for i := range d {
			s[j] += q[i] * float64(k[j*d+i])
		}
		s[j] *= scale
		m = max(m, s[j])
	}
	var z float64
	for j := range s {
		s[j] = math.Exp(s[j] - m)
		z += s[j]
	}
	out := make([]float64, d)
	for j := range n {
		for i := range d {
			out[i] += s[j] / z * float64(v[j*d+i])
		}
	}
	return out
}

// TestAttendInt4MatchesReference: AttendBlockInt4 against float64
// attention over what the kernel reads — the dequantized keys and values
// and the query as its int8 codes stand for it (rotated, quantized,
// dequantized, rotated back) — to float32 rounding; each head of a block
// bitwise what AttendInt4 gives it alone; and, for the record of what 4
// bits cost, within a loose bound of attention over the exact float32
// cache.
func TestAttendInt4MatchesReference(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(45, 45))
		for _, sh := range []struct{ rows, g, n0, d int }{
			{1, 1, 1, 128}, {1, 2, 37, 128}, {3, 2, 50, 128}, {5, 4, 300, 128}, {2, 3, 9, 64}, {1, 2, 20, 16}, {4, 1, 6, 256},
			// Several chunks of the integer sums (w16Chunk), a pair and a
			// single head, odd and even lengths.
			{2, 3, 2599, 128}, {1, 2, 2048, 128},
		} {
			c := newKVCase(r, sh.rows, sh.g, sh.n0, sh.d)
			x := newI4Case(c)
			d, g := sh.d, sh.g
			out := make([]float32, (sh.rows-1)*c.ostride+g*d)
			scratch := make([]float32, AttendBlockScratch(sh.rows, g, sh.n0, d))
			AttendBlockInt4(out, c.ostride, c.q, c.qstride, sh.rows, g, x.k, x.v, x.ks, x.vs, sh.n0, d, x.stride, kvScale, scratch)
			var worstExact float64
			for row := range sh.rows {
				n := sh.n0 + row
				for h := range g {
					qh := c.q[row*c.qstride+h*d:][:d]
					// The query as the kernel sees it.
					rq := append([]float32(nil), qh...)
					RotateInt4(rq)
					qc := make([]int8, d)
					qs := QuantizeInt8(qc, rq)
					for i := range rq {
						rq[i] = qs * float32(qc[i])
					}
					UnrotateInt4(rq)
					q64 := make([]float64, d)
					for i := range q64 {
						q64[i] = float64(rq[i])
					}
					want := attendRef64(q64, x.kq, x.vq, n, d, kvScale)
					got := out[row*c.ostride+h*d:][:d]
					for i := range d {
						if e := math.Abs(float64(got[i]) - want[i]); e > 2e-4*(1+math.Abs(want[i])) {
							t.Fatalf("%+v row %d head %d: out[%d] = %g, reference %g", sh, row, h, i, got[i], want[i])
						}
					}
					alone := make([]float32, d)
					AttendInt4(alone, qh, x.k, x.v, x.ks, x.vs, n, d, x.stride, kvScale, nil)
					for i := range d {
						if math.Float32bits(alone[i]) != math.Float32bits(got[i]) {
							t.Fatalf("%+v row %d head %d: block out[%d] = %g, alone %g", sh, row, h, i, got[i], alone[i])
						}
					}
					// Against the exact cache.
					k32, v32 := make([]float32, n*d), make([]float32, n*d)
					qx := make([]float64, d)
					for j := range n {
						copy(k32[j*d:(j+1)*d], c.k32[j*c.stride:][:d])
						copy(v32[j*d:(j+1)*d], c.v32[j*c.stride:][:d])
					}
					for i := range qx {
						qx[i] = float64(qh[i])
					}
					exact := attendRef64(qx, k32, v32, n, d, kvScale)
					var num, den float64
					for i := range d {
						num += (float64(got[i]) - exact[i]) * (float64(got[i]) - exact[i])
						den += exact[i] * exact[i]
					}
					worstExact = max(worstExact, math.Sqrt(num/den))
				}
			}
			// Not a property of the kernel but of 4 bits: keys up to 3×
			// the unit scale make the softmax peaked, where a key's
			// rounding moves the weights (0.11 with one position, 0.5 at
			// 300 positions and four heads); the model-level figures are
			// in qwen3's TestKVCacheAccuracy.
			if worstExact > 0.6 {
				t.Fatalf("%+v: relative error against the float32 cache %g", sh, worstExact)
			}
			t.Logf("%+v: worst relative error against the float32 cache %.3g", sh, worstExact)
		}
	})
}

func BenchmarkAttendInt4(b *testing.B) {
	const rows, g, n0, d = 1, 2, 4000, 128
	r := rand.New(rand.NewPCG(1, 1))
	c := newKVCase(r, rows, g, n0, d)
	x := newI4Case(c)
	out := make([]float32, g*d)
	scratch := make([]float32, AttendBlockScratch(rows, g, n0, d))
	for _, name := range implNames() {
		restore, _ := useImpl(name)
		b.Run(name+"/int4", func(b *testing.B) {
			for b.Loop() {
				AttendBlockInt4(out, g*d, c.q, g*d, rows, g, x.k, x.v, x.ks, x.vs, n0, d, x.stride, kvScale, scratch)
			}
		})
		restore()
	}
}

// TestAttendInt4NonFinite: a NaN or an infinite value scale, or a NaN in
// the query, reaches every output element of the heads that read it, on
// every implementation (the integer sums hand such rows to the float
// sums); the other heads' outputs stay finite.
func TestAttendInt4NonFinite(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(47, 47))
		const rows, g, n0, d = 1, 3, 1500, 128
		c := newKVCase(r, rows, g, n0, d)
		x := newI4Case(c)
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
			vs := append([]float32(nil), x.vs...)
			vs[1100] = bad
			out := make([]float32, g*d)
			AttendBlockInt4(out, g*d, c.q, c.qstride, rows, g, x.k, x.v, x.ks, vs, n0, d, x.stride, kvScale, make([]float32, AttendBlockScratch(rows, g, n0, d)))
			for i, o := range out {
				if !math.IsNaN(float64(o)) && !math.IsInf(float64(o), 0) {
					t.Fatalf("value scale %g: out[%d] = %g, want NaN or ±Inf", bad, i, o)
				}
			}
		}
		q := append([]float32(nil), c.q...)
		q[d+5] = float32(math.NaN()) // head 1 only
		out := make([]float32, g*d)
		AttendBlockInt4(out, g*d, q, c.qstride, rows, g, x.k, x.v, x.ks, x.vs, n0, d, x.stride, kvScale, make([]float32, AttendBlockScratch(rows, g, n0, d)))
		for i, o := range out {
			if nan := math.IsNaN(float64(o)); nan != (i/d == 1) {
				t.Fatalf("NaN in head 1's query: out[%d] (head %d) = %g", i, i/d, o)
			}
		}
	})
}

// BenchmarkAttendLayers is the attention of a 0.6B step at position 4,000
// over caches that do not fit any cache level: 28 layers × 8 key/value
// heads, two query heads each, both threads, one (layer, head) per work
// item as the model runs it. bf16, int8 and int4 caches of the same positions;
// the figure to compare with BenchmarkReadBandwidth is the cache bytes
// read per second (kvGB/s). STREAMGUARD_BENCH_LARGE=1 runs it (a 230 MB
// int8 cache); otherwise 32 heads.
func BenchmarkAttendLayers(b *testing.B) {
	const g, n, d = 2, 4000, 128
	heads := 32
	if benchLarge {
		heads = 28 * 8
	}
	r := rand.New(rand.NewPCG(2, 2))
	kv := randVec(r, n*d)
	i8k, i8v := make([][]int8, heads), make([][]int8, heads)
	bk, bv := make([][]uint16, heads), make([][]uint16, heads)
	i4k, i4v := make([][]byte, heads), make([][]byte, heads)
	ks, vs := make([]float32, n), make([]float32, n)
	for h := range heads {
		i8k[h], i8v[h] = make([]int8, n*d), make([]int8, n*d)
		i4k[h], i4v[h] = make([]byte, n*d/2), make([]byte, n*d/2)
		bk[h], bv[h] = make([]uint16, n*d), make([]uint16, n*d)
		ToBF16(bk[h], kv)
		ToBF16(bv[h], kv)
		for j := range n {
			ks[j] = QuantizeInt8(i8k[h][j*d:(j+1)*d], kv[j*d:(j+1)*d])
			vs[j] = QuantizeInt8(i8v[h][j*d:(j+1)*d], kv[j*d:(j+1)*d])
			QuantizeInt4(i4k[h][j*d/2:], kv[j*d:(j+1)*d], nil)
			QuantizeInt4(i4v[h][j*d/2:], kv[j*d:(j+1)*d], nil)
		}
	}
	q := randVec(r, g*d)
	outs := make([][]float32, Threads())
	scratch := make([][]float32, Threads())
	for w := range outs {
		outs[w] = make([]float32, g*d)
		scratch[w] = make([]float32, AttendBlockScratch(1, g, n, d))
	}
	for _, kind := range []string{"bf16", "int8", "int4"} {
		bytes := float64(heads) * 2 * n * map[string]float64{"bf16": 2 * d, "int8": d + 4, "int4": d/2 + 4}[kind]
		b.Run(kind, func(b *testing.B) {
			for b.Loop() {
				ParallelFor(heads, Threads(), func(w, h int) {
					switch kind {
					case "bf16":
						AttendBlockBF16(outs[w], g*d, q, g*d, 1, g, bk[h], bv[h], n, d, d, kvScale, scratch[w])
					case "int8":
						AttendBlockInt8(outs[w], g*d, q, g*d, 1, g, i8k[h], i8v[h], ks, vs, n, d, d, kvScale, scratch[w])
					default:
						AttendBlockInt4(outs[w], g*d, q, g*d, 1, g, i4k[h], i4v[h], ks, vs, n, d, d/2, kvScale, scratch[w])
					}
				})
			}
			b.ReportMetric(bytes*float64(b.N)/b.Elapsed().Seconds()/1e9, "kvGB/s")
		})
	}
}

// TestSumsW16TinyWeights: a chunk whose weights are all far below the
// softmax's peak (denormal, or zero) is summed without overflowing its
// scale: every 16-bit weight left in place is a code in [0, 32767] (an
// infinite factor would turn the zero weights into 0·∞ and then into
// -32768), and the integer sums agree with the float sums to the float
// sums' own precision.
func TestSumsW16TinyWeights(t *testing.T) {
	forEachImpl(t, func(t *testing.T) {
		a := &active.i4KV
		if a.sumW16Q2 == nil {
			t.Skip("no integer sums in this implementation")
		}
		r := rand.New(rand.NewPCG(51, 51))
		const g, d, n = 2, 128, 2*w16Chunk + 100
		v := randI4(r, n*d/2)
		p := make([]float32, g*n)
		for i := range p {
			switch j := i % n; {
			case j < w16Chunk:
				p[i] = float32(r.Float64()) / n
			case j < 2*w16Chunk:
				p[i] = float32(r.Float64()) * 1e-41 // denormal
				if j%3 == 0 {
					p[i] = 0
				}
			default:
				p[i] = 0
			}
		}
		want := make([]float32, g*d)
		for h := range g {
			sumI4Go(want[h*d:], p[h*n:], v, n, d, d/2, false)
		}
		got := make([]float32, g*d)
		if !sumsW16(a, got, p, n, g, v, n, d, d/2) {
			t.Fatal("sumsW16 refused finite weights")
		}
		w := unsafe.Slice((*int16)(unsafe.Pointer(&p[0])), 2*len(p))
		for h := range g {
			for j, c := range w[2*h*n : 2*h*n+n] {
				if c < 0 {
					t.Fatalf("head %d: weight %d became code %d", h, j, c)
				}
			}
		}
		for i := range got {
			if math.IsNaN(float64(got[i])) || math.Abs(float64(got[i]-want[i])) > 1e-4*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("out[%d] = %g, float sums %g", i, got[i], want[i])
			}
		}
	})
}
