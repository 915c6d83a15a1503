package gpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/cuda"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/kernels"
)

// The kernels one by one against the CPU kernels they mirror, on random
// inputs at real sizes, so that a forward that disagrees with the CPU can
// be traced to its kernel. Each test states its tolerance and why.

type kernelRig struct {
	t    *testing.T
	ctx  *cuda.Context
	mod  *cuda.Module
	bufs []*cuda.Buffer
}

func newRig(t *testing.T) *kernelRig {
	ctx := openGPU(t)
	src, err := PTX(ctx.Device.ComputeMajor, ctx.Device.ComputeMinor)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := ctx.LoadPTX(src)
	if err != nil {
		t.Fatal(err)
	}
	r := &kernelRig{t: t, ctx: ctx, mod: mod}
	t.Cleanup(func() {
		for _, b := range r.bufs {
			b.Free()
		}
		mod.Unload()
	})
	return r
}

func put[T any](r *kernelRig, v []T) uint64 {
	b, err := r.ctx.Alloc(int64(len(v) * sizeOf[T]()))
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cuda.CopyIn(b, 0, v); err != nil {
		r.t.Fatal(err)
	}
	r.bufs = append(r.bufs, b)
	return b.Ptr
}

func (r *kernelRig) launch(name string, grid, block cuda.Dim3, args ...any) {
	f, err := r.mod.Function(name)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := f.Launch(grid, block, args...); err != nil {
		r.t.Fatal(err)
	}
}

func (r *kernelRig) get(ptr uint64, n int) []float32 {
	for _, b := range r.bufs {
		if b.Ptr == ptr {
			out := make([]float32, n)
			if err := cuda.CopyOut(out, b, 0); err != nil {
				r.t.Fatal(err)
			}
			return out
		}
	}
	r.t.Fatal("no such buffer")
	return nil
}

func randVec(r *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = (r.Float32()*2 - 1) * scale
	}
	return v
}

// maxRel is max|got-want| / max|want|.
func maxRel(got, want []float32) float64 {
	var d, m float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i]-want[i])))
		m = max(m, math.Abs(float64(want[i])))
	}
	return d / max(m, 1e-30)
}

func TestKernelRMSNormQKPrep(t *testing.T) {
	r := newRig(t)
	g := rand.New(rand.NewPCG(1, 1))
	const rows, d = 6, 1024
	x, w := randVec(g, rows*d, 3), randVec(g, d, 1)
	want := make([]float32, rows*d)
	for i := range rows {
		kernels.RMSNorm(want[i*d:(i+1)*d], x[i*d:(i+1)*d], w, 1e-6)
	}
	out := put(r, make([]float32, rows*d))
	r.launch("rmsnorm", cuda.Dim3{X: rows}, cuda.Dim3{X: 1024}, out, put(r, x), put(r, w), int32(d), float32(1e-6))
	// The sum of squares is float64 on both; only the final float32
	// products can round differently: a few ulps.
	if e := maxRel(r.get(out, rows*d), want); e > 1e-6 {
		t.Errorf("rmsnorm: max relative error %.3g", e)
	}

	// qk_prep: per head RMSNorm, RoPE, and for keys and values the bf16
	// cache store; sources as columns of a fused q|k|v product.
	const T, heads, kvHeads, hd = 3, 4, 2, 128
	hf := hd / 2
	qd, kvd := heads*hd, kvHeads*hd
	st := qd + 2*kvd
	qkv := randVec(g, T*st, 2)
	qn, kn := randVec(g, hd, 1), randVec(g, hd, 1)
	pos := []int32{0, 7, 4000}
	slots := []int32{5, 0, 2}
	cos, sin := make([]float32, 4001*hf), make([]float32, 4001*hf)
	for p := range 4001 {
		for i := range hf {
			s, c := math.Sincos(float64(p) * math.Pow(1e6, -float64(2*i)/hd))
			cos[p*hf+i], sin[p*hf+i] = float32(c), float32(s)
		}
	}
	wantQ := make([]float32, T*qd)
	wantK, wantV := make([]float32, 6*kvd), make([]float32, 6*kvd)
	for t0 := range T {
		p := int(pos[t0])
		row := qkv[t0*st:]
		for h := range heads + kvHeads {
			var dst []float32
			var src, w []float32
			if h < heads {
				dst, src, w = wantQ[(t0*heads+h)*hd:][:hd], row[h*hd:][:hd], qn
			} else {
				kh := h - heads
				dst, src, w = wantK[int(slots[t0])*kvd+kh*hd:][:hd], row[qd+kh*hd:][:hd], kn
				copy(wantV[int(slots[t0])*kvd+kh*hd:][:hd], row[qd+kvd+kh*hd:][:hd])
			}
			kernels.RMSNorm(dst, src, w, 1e-6)
			kernels.RoPE(dst, cos[p*hf:(p+1)*hf], sin[p*hf:(p+1)*hf])
		}
	}
	dq := put(r, make([]float32, T*qd))
	kc, vc := make([]uint16, 6*kvd), make([]uint16, 6*kvd)
	dk, dv, dqkv := put(r, kc), put(r, vc), put(r, qkv)
	r.launch("qk_prep", cuda.Dim3{X: T, Y: heads + kvHeads}, cuda.Dim3{X: hd},
		dq, dk, dv, dqkv, dqkv+uint64(qd*4), dqkv+uint64((qd+kvd)*4), int32(st), int32(st), int32(st), put(r, qn), put(r, kn),
		put(r, cos), put(r, sin), put(r, pos), put(r, slots), int32(heads), int32(kvHeads), int32(hd), float32(1e-6))
	// The sum of squares is float64 on both; the final products and the
	// rotation may round (or fuse) differently: a few ulps.
	if e := maxRel(r.get(dq, T*qd), wantQ); e > 1e-6 {
		t.Errorf("qk_prep queries: max relative error %.3g", e)
	}
	// Keys and values are stored in bf16: the CPU's values rounded the
	// same way, within one bf16 step (2^-8) where a few-ulp difference
	// crossed a rounding boundary; slots no token wrote stay zero.
	for name, c := range map[string]struct {
		ptr  uint64
		want []float32
	}{"keys": {dk, wantK}, "values": {dv, wantV}} {
		got := make([]uint16, 6*kvd)
		for _, b := range r.bufs {
			if b.Ptr == c.ptr {
				if err := cuda.CopyOut(got, b, 0); err != nil {
					t.Fatal(err)
				}
			}
		}
		gf := make([]float32, len(got))
		for i, v := range got {
			gf[i] = half.BF16ToF32(v)
		}
		if e := maxRel(gf, c.want); e > 1.0/256 {
			t.Errorf("qk_prep %s: max relative error %.3g", name, e)
		}
	}
}

func TestKernelMatMul(t *testing.T) {
	r := newRig(t)
	g := rand.New(rand.NewPCG(2, 2))
	for _, c := range []struct{ T, N, K int }{{1, 1024, 1024}, {13, 3072, 1024}, {9, 10, 36}} {
		x := randVec(g, c.T*c.K, 1)
		wf := randVec(g, c.N*c.K, 0.05)
		wb := make([]uint16, len(wf))
		for i, v := range wf {
			wb[i] = half.F32ToBF16(v)
		}
		want := make([]float32, c.T*c.N)
		kernels.MatMulBF16(want, x, wb, c.T, c.K, c.N)
		y := put(r, make([]float32, c.T*c.N))
		r.launch("matmul_bf16", cuda.Dim3{X: uint32((c.N + 7) / 8), Y: uint32((c.T + 7) / 8)}, cuda.Dim3{X: 256},
			y, put(r, x), put(r, wb), int32(c.T), int32(c.N), int32(c.K))
		// Same products, summed in another order: float32 rounding of a
		// K-term sum, well under 1e-5 of the largest output here.
		if e := maxRel(r.get(y, c.T*c.N), want); e > 1e-5 {
			t.Errorf("matmul_bf16 %d×%d×%d: max relative error %.3g", c.T, c.N, c.K, e)
		}
	}
}

func TestKernelAttention(t *testing.T) {
	r := newRig(t)
	g := rand.New(rand.NewPCG(3, 3))
	const heads, kvHeads, hd, bs = 16, 8, 128, 16
	const n = 300 // positions of the one stream; the token is at n-1
	kvd := kvHeads * hd
	k, v := randVec(g, n*kvd, 1), randVec(g, n*kvd, 1)
	// The cache holds bf16: round the CPU's keys and values the same way.
	kb, vb := make([]uint16, n*kvd), make([]uint16, n*kvd)
	for i := range k {
		kb[i], vb[i] = half.F32ToBF16(k[i]), half.F32ToBF16(v[i])
		k[i], v[i] = half.BF16ToF32(kb[i]), half.BF16ToF32(vb[i])
	}
	// A block table that is not the identity: blocks in reverse order.
	nb := (n + bs - 1) / bs
	table := make([]int32, nb)
	for i := range table {
		table[i] = int32(nb - 1 - i)
	}
	kc, vc := make([]uint16, nb*bs*kvd), make([]uint16, nb*bs*kvd)
	for p := range n {
		slot := int(table[p/bs])*bs + p%bs
		copy(kc[slot*kvd:(slot+1)*kvd], kb[p*kvd:(p+1)*kvd])
		copy(vc[slot*kvd:(slot+1)*kvd], vb[p*kvd:(p+1)*kvd])
	}
	q := randVec(g, heads*hd, 1)
	scale := float32(1 / math.Sqrt(hd))
	want := make([]float32, heads*hd)
	scratch := make([]float32, n)
	for h := range heads {
		kh := h / (heads / kvHeads)
		kernels.Attend(want[h*hd:(h+1)*hd], q[h*hd:(h+1)*hd], k[kh*hd:], v[kh*hd:], n, hd, kvd, scale, scratch)
	}
	out := put(r, make([]float32, heads*hd))
	r.launch("attention", cuda.Dim3{X: 1, Y: heads}, cuda.Dim3{X: 128},
		out, put(r, q), put(r, kc), put(r, vc), put(r, table), put(r, []int32{0}), put(r, []int32{n - 1}),
		int32(heads), int32(kvHeads), int32(hd), int32(bs), scale)
	// __expf (about 2 ulp) and another summation order.
	if e := maxRel(r.get(out, heads*hd), want); e > 1e-4 {
		t.Errorf("attention: max relative error %.3g", e)
	}
}

// TestKernelMMA runs the tensor-core products on the GPU with the checks of
// TestMMAEmulated (the exact product within the bound of their arithmetic;
// 16- and 64-token tiles, and a token alone, bitwise equal), on its edge
// shapes and at real ones: a 0.6B prefill's q projection and a decode
// step's down projection, in bf16 and AWQ.
func TestKernelMMA(t *testing.T) {
	r := newRig(t)
	g := rand.New(rand.NewPCG(4, 4))
	cases := []*mmaCase{
		bf16Case(g, 70, 200, 256), awqCase(t, g, 21, 136, 384, 128), awqCase(t, g, 21, 136, 384, 64),
		bf16Case(g, 13, 72, 640), awqCase(t, g, 13, 72, 640, 64),
		bf16Case(g, 512, 2048, 1024), bf16Case(g, 3, 1024, 3072),
		awqCase(t, g, 300, 2048, 1024, 128), awqCase(t, g, 1, 1024, 3072, 128),
	}
	if sourceStandIn() {
		cases = cases[:5] // the edge shapes; the real ones take emulated threads a minute
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := put(r, c.w)
			var scales, neg uint64
			if c.awq {
				scales, neg = put(r, c.scales), put(r, c.neg)
			}
			checkMMA(t, c, func(bm, T int, x []float32, accum bool) []float32 {
				nt := map[int]int{16: 1, 64: 2, 1: 1}[bm]
				per := mmaWarps * nt
				grid, block := cuda.Dim3{X: uint32((c.N/8 + per - 1) / per), Y: uint32((T + bm - 1) / bm)}, cuda.Dim3{X: mmaWarps * 32}
				name := fmt.Sprintf("m%d", bm)
				if bm == 1 {
					grid.Y, name = 1, "s"
				}
				y0 := make([]float32, T*c.N)
				acc := int32(0)
				if accum {
					acc = 1
					for i := range y0 {
						y0[i] = accumStart(i)
					}
				}
				y := put(r, y0)
				if c.awq {
					r.launch("mma_awq_"+name, grid, block, y, put(r, x), w, scales, neg, int32(T), int32(c.N), int32(c.K), int32(c.group), acc)
				} else {
					r.launch("mma_bf16_"+name, grid, block, y, put(r, x), w, int32(T), int32(c.N), int32(c.K), acc)
				}
				return r.get(y, T*c.N)
			})
		})
	}
}

// TestKernelAttentionMMA runs the tensor-core attention on the GPU with the
// checks of TestAttentionEmulated (each output against the exact attention,
// the same token bitwise however it is batched, tiled or split), and on a
// long stream: a prompt chunk and a token at position 4,000 of the 0.6B's
// head layout (16 query heads, 8 key-value heads).
func TestKernelAttentionMMA(t *testing.T) {
	r := newRig(t)
	g := rand.New(rand.NewPCG(5, 5))
	for _, tc := range []struct {
		c     *attnCase
		spans []span
		long  bool // the 0.6B's heads at position 4,000
	}{
		{newAttnCase(g, 4, 2, 16, []int{530, 20, 700}), []span{{0, 500, 30}, {1, 0, 20}, {2, 699, 1}}, false},
		{newAttnCase(g, 16, 8, 16, []int{4001, 600}), []span{{0, 4000, 1}, {1, 88, 512}}, true},
	} {
		if sourceStandIn() && tc.long {
			continue // the long stream takes emulated threads half a minute
		}
		c := tc.c
		kc, vc, tables := put(r, c.kc), put(r, c.vc), put(r, c.tables)
		checkAttention(t, c, tc.spans, func(spans []span, splits int) []float32 {
			lens, pos, toff, q := c.batch(spans)
			tiles, soff, states := attnLayout(lens, pos)
			T := len(pos)
			st := put(r, make([]float32, states*c.heads*attnState))
			out := put(r, make([]float32, T*c.heads*attnHeadDim))
			dpos, dsoff := put(r, pos), put(r, soff)
			r.launch("attn_chunk", cuda.Dim3{X: uint32(T), Y: uint32(c.heads), Z: uint32(splits)}, cuda.Dim3{X: 128},
				st, put(r, q), kc, vc, put(r, tiles), tables, put(r, toff), dpos, dsoff,
				int32(c.heads), int32(c.kvHeads), int32(c.bs), c.scale)
			r.launch("attn_merge", cuda.Dim3{X: uint32(T), Y: uint32(c.heads)}, cuda.Dim3{X: attnHeadDim}, out, st, dpos, dsoff, int32(c.heads))
			return r.get(out, T*c.heads*attnHeadDim)
		})
	}
}
