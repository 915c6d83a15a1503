//go:build !purego

package kernels

import (
	"math"
	"unsafe"

	"golang.org/x/sys/cpu"

	"github.com/streamguard/streamguard/internal/half"
)

func init() {
	x := &cpu.X86
	if x.HasAVX2 && x.HasFMA && x.HasF16C {
		register(&avx2Impl)
	}
	if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512DQ && x.HasF16C {
		register(&avx512Impl)
	}
	if x.HasAVX512F {
		readSumAsm = readSumAVX512
	}
}

// asmGemv and asmGemm4 adapt the assembly kernels to the driver's slices.
// The driver guarantees K > 0, so the slices are never empty.
func asmGemv[W float32 | uint16](f func(dst, x *float32, w *W, kk, rows, ldw int)) func([]float32, []float32, []W, int, int, int) {
	return func(dst, x []float32, w []W, kk, rows, ldw int) {
		f(&dst[0], &x[0], &w[0], kk, rows, ldw)
	}
}

func asmGemm4[W float32 | uint16](f func(dst *float32, ldd int, x *float32, ldx int, w *W, kk, rows, ldw int)) func([]float32, int, []float32, int, []W, int, int, int) {
	return func(dst []float32, ldd int, x []float32, ldx int, w []W, kk, rows, ldw int) {
		f(&dst[0], ldd, &x[0], ldx, &w[0], kk, rows, ldw)
	}
}

// vecOps are one instruction set's assembly small-op kernels; each handles
// a multiple of lanes elements and the wrappers below finish the tails in Go.
type vecOps struct {
	lanes      int
	dot        func(a, b *float32, n int) float32
	axpy       func(alpha float32, x, y *float32, n int)
	scaleMul   func(dst, x, w *float32, s float32, n int)
	scale      func(x *float32, s float32, n int)
	maxf       func(x *float32, n int) float32
	expSub     func(x *float32, m float32, n int) float32
	siluMul    func(dst, gate, up *float32, n int)
	rope       func(x, cos, sin *float32, half, n int)
	attnScores func(s, q, k *float32, n, d, stride int, scale float32)
	attnSum    func(out, p, v *float32, n, d, stride int)
	attnSumAdd func(out, p, v *float32, n, d, stride int)
}

func (o *vecOps) vec(n int) int { return n &^ (o.lanes - 1) }

func (o *vecOps) dotF(a, b []float32) float32 {
	n := o.vec(len(a))
	var s float32
	if n > 0 {
		s = o.dot(&a[0], &b[0], n)
	}
	for i := n; i < len(a); i++ {
		s += a[i] * b[i]
	}
	return s
}

func (o *vecOps) axpyF(alpha float32, x, y []float32) {
	n := o.vec(len(x))
	if n > 0 {
		o.axpy(alpha, &x[0], &y[0], n)
	}
	axpyGeneric(alpha, x[n:], y[n:])
}

func (o *vecOps) rmsNormF(dst, x, w []float32, eps float32) {
	ss := o.dotF(x, x)
	r := float32(1 / math.Sqrt(float64(ss)/float64(len(x))+float64(eps)))
	n := o.vec(len(x))
	if n > 0 {
		o.scaleMul(&dst[0], &x[0], &w[0], r, n)
	}
	for i := n; i < len(x); i++ {
		dst[i] = w[i] * (x[i] * r)
	}
}

func (o *vecOps) siluMulF(dst, gate, up []float32) {
	n := o.vec(len(dst))
	if n > 0 {
		o.siluMul(&dst[0], &gate[0], &up[0], n)
	}
	siluMulGeneric(dst[n:], gate[n:], up[n:])
}

func (o *vecOps) softmaxF(x []float32) {
	n := o.vec(len(x))
	if n == 0 {
		softmaxGeneric(x)
		return
	}
	m := o.maxf(&x[0], n)
	for _, v := range x[n:] {
		m = max(m, v)
	}
	sum := o.expSub(&x[0], m, n)
	for i := n; i < len(x); i++ {
		e := float32(math.Exp(float64(x[i] - m)))
		x[i] = e
		sum += e
	}
	inv := 1 / sum
	o.scale(&x[0], inv, n)
	for i := n; i < len(x); i++ {
		x[i] *= inv
	}
}

func (o *vecOps) ropeF(x, cos, sin []float32) {
	half := len(x) / 2
	n := o.vec(half)
	if n > 0 {
		o.rope(&x[0], &cos[0], &sin[0], half, n)
	}
	ropeGeneric2(x[n:half], x[half+n:2*half], cos[n:half], sin[n:half])
}

func (o *vecOps) attendF(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	if d == 0 || d%o.lanes != 0 || n == 0 {
		attendWith(o.dotF, o.softmaxF, o.axpyF)(out, q, k, v, n, d, stride, scale, scratch)
		return
	}
	o.attnScores(&scratch[0], &q[0], &k[0], n, d, stride, scale)
	o.softmaxF(scratch[:n])
	o.attnSum(&out[0], &scratch[0], &v[0], n, d, stride)
}

func (o *vecOps) attendGroupF(out, q []float32, g int, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	if g == 1 || d == 0 || d%o.lanes != 0 || n == 0 {
		attendGroupLoop(o.attendF)(out, q, g, k, v, n, d, stride, scale, scratch)
		return
	}
	C := max(4, attnChunkBytes/(4*d))
	for j0 := 0; j0 < n; j0 += C {
		c := min(C, n-j0)
		for i := range g {
			o.attnScores(&scratch[i*n+j0], &q[i*d], &k[j0*stride], c, d, stride, scale)
		}
	}
	for i := range g {
		o.softmaxF(scratch[i*n : (i+1)*n])
	}
	for j0 := 0; j0 < n; j0 += C {
		c := min(C, n-j0)
		for i := range g {
			sum := o.attnSumAdd
			if j0 == 0 {
				sum = o.attnSum
			}
			sum(&out[i*d], &scratch[i*n+j0], &v[j0*stride], c, d, stride)
		}
	}
}

// mulF sets dst[k] = x[k]·w[k] (scaleMul by 1: x·1 is x exactly).
func (o *vecOps) mulF(dst, x, w []float32) {
	n := o.vec(len(dst))
	if n > 0 {
		o.scaleMul(&dst[0], &x[0], &w[0], 1, n)
	}
	mulGeneric(dst[n:], x[n:len(dst)], w[n:len(dst)])
}

func (o *vecOps) fill(im *impl) {
	im.dot, im.axpy, im.rmsNorm, im.siluMul = o.dotF, o.axpyF, o.rmsNormF, o.siluMulF
	im.softmax, im.rope, im.attend, im.attendGroup = o.softmaxF, o.ropeF, o.attendF, o.attendGroupF
	im.mul = o.mulF
}

var avx2Ops = vecOps{
	lanes: 8, dot: dotAVX2, axpy: axpyAVX2, scaleMul: scaleMulAVX2, scale: scaleAVX2, maxf: maxfAVX2,
	expSub: expSubAVX2, siluMul: siluMulAVX2, rope: ropeAVX2, attnScores: attnScoresAVX2, attnSum: attnSumAVX2, attnSumAdd: attnSumAddAVX2,
}

var avx512Ops = vecOps{
	lanes: 16, dot: dotAVX512, axpy: axpyAVX512, scaleMul: scaleMulAVX512, scale: scaleAVX512, maxf: maxfAVX512,
	expSub: expSubAVX512, siluMul: siluMulAVX512, rope: ropeAVX512, attnScores: attnScoresAVX512, attnSum: attnSumAVX512, attnSumAdd: attnSumAddAVX512,
}

var avx2Impl = func() impl {
	im := impl{
		name: "avx2",
		f32:  matKernels[float32]{kstep: 8, gemv: asmGemv(gemvF32AVX2), gemm4: asmGemm4(gemm4F32AVX2), gemm2: asmGemm4(gemm2F32AVX2), widen: identity},
		bf16: matKernels[uint16]{kstep: 8, gemv: asmGemv(gemvBF16AVX2), gemm4: asmGemm4(gemm4BF16AVX2), gemm2: asmGemm4(gemm2BF16AVX2), widen: bf16ToF32},
		f16:  matKernels[uint16]{kstep: 8, gemv: asmGemv(gemvF16AVX2), gemm4: asmGemm4(gemm4F16AVX2), gemm2: asmGemm4(gemm2F16AVX2), widen: half.F16ToF32},
		int4: int4Kernels{quant: int4QuantGeneric, gemv: int4GemvAVX2Go, gemm4: int4GemmLoop(int4GemvAVX2Go, 4), gemm2: int4GemmLoop(int4GemvAVX2Go, 2)},
		// AVX2 has no narrowing store (VPMOVDW): the Go loop.
		toBF16:   toBF16Generic,
		f16ToF32: half.F16SliceToF32,
	}
	avx2Ops.fill(&im)
	im.bf16KV = kvAttn[uint16]{lanes: 8, scores: attnScoresBF16AVX2, sum: attnSumBF16AVX2, sumAdd: attnSumAddBF16AVX2,
		scoresGo: scoresBF16Go, sumGo: sumBF16Go}
	im.i8KV = kvAttn[int8]{lanes: 8, sum: attnSumI8AVX2, sumAdd: attnSumAddI8AVX2, sumGo: sumI8Go}
	im.i8Dot = i8Dot{lanes: 16, vec: attnDotI8AVX2}
	im.i4KV = i4Attn{dotLanes: 64, dot: attnDotI4AVX2, sumLanes: 16, sum: attnSumI4AVX2, sumAdd: attnSumAddI4AVX2}
	return im
}()

var avx512Impl = func() impl {
	im := impl{
		name: "avx512",
		f32:  matKernels[float32]{kstep: 16, gemv: asmGemv(gemvF32AVX512), gemm4: asmGemm4(gemm4F32AVX512), gemm2: asmGemm4(gemm2F32AVX512), widen: identity},
		bf16: matKernels[uint16]{kstep: 16, gemv: asmGemv(gemvBF16AVX512), gemm4: asmGemm4(gemm4BF16AVX512), gemm2: asmGemm4(gemm2BF16AVX512), widen: bf16ToF32},
		f16:  matKernels[uint16]{kstep: 16, gemv: asmGemv(gemvF16AVX512), gemm4: asmGemm4(gemm4F16AVX512), gemm2: asmGemm4(gemm2F16AVX512), widen: half.F16ToF32},
		int4: int4Kernels{quant: int4QuantAVX512Go, gemv: int4GemvAVX2Go, gemm4: int4GemmLoop(int4GemvAVX2Go, 4), gemm2: int4GemmLoop(int4GemvAVX2Go, 2)},
	}
	if cpu.X86.HasAVX512VNNI {
		im.int4 = int4Kernels{quant: int4QuantAVX512Go, gemv: int4Gemm1VNNIGo, gemm4: int4Gemm4VNNIGo, gemm2: int4Gemm2VNNIGo, unpacked: int4UVNNI, interleave4: int4Interleave4Go, interleave2: int4Interleave2Go,
			gemm4Stream: int4Gemm4x4VNNIGo, gemm8: int4Gemm8x2VNNIGo}
	}
	avx512Ops.fill(&im)
	im.toBF16 = toBF16AVX512Go
	im.f16ToF32 = f16ToF32AVX512Go
	im.attendBlock = attendBlockAVX512
	im.bf16KV = kvAttn[uint16]{lanes: 16, scores: attnScoresBF16AVX512, sum: attnSumBF16AVX512, sumAdd: attnSumAddBF16AVX512,
		scoresQ4: attnScoresQ4BF16AVX512, sumQ4: attnSumQ4BF16AVX512, sumAddQ4: attnSumAddQ4BF16AVX512,
		scoresQ2: attnScoresQ2BF16AVX512, sumQ2: attnSumQ2BF16AVX512, sumAddQ2: attnSumAddQ2BF16AVX512,
		scoresGo: scoresBF16Go, sumGo: sumBF16Go}
	im.i8KV = kvAttn[int8]{lanes: 16, sum: attnSumI8AVX512, sumAdd: attnSumAddI8AVX512,
		sumQ4: attnSumQ4I8AVX512, sumAddQ4: attnSumAddQ4I8AVX512,
		sumQ2: attnSumQ2I8AVX512, sumAddQ2: attnSumAddQ2I8AVX512, sumGo: sumI8Go}
	im.i8Dot = i8Dot{lanes: 16, vec: attnDotI8AVX2}
	im.i4KV = i4Attn{dotLanes: 64, dot: attnDotI4AVX2, sumLanes: 16, sum: attnSumI4AVX2, sumAdd: attnSumAddI4AVX2,
		rotate: rotateI4AVX512, unrotate: unrotateI4AVX512, codes: codesI4AVX512}
	if cpu.X86.HasAVX512VNNI {
		im.i8Dot = i8Dot{lanes: 64, vec: attnDotI8VNNI, vecQ2: attnDotQ2I8VNNI}
		im.i4KV.dotLanes, im.i4KV.dot, im.i4KV.dotQ2 = 128, attnDotI4VNNI, attnDotQ2I4VNNI
		im.i4KV.sumW16, im.i4KV.sumAddW16 = attnSumW16Q1I4VNNI, attnSumAddW16Q1I4VNNI
		im.i4KV.sumW16Q2, im.i4KV.sumAddW16Q2 = attnSumW16Q2I4VNNI, attnSumAddW16Q2I4VNNI
		im.i4KV.maxSum, im.i4KV.toW16 = maxSumAVX512, toW16AVX512
	}
	return im
}()

// toBF16AVX512Go converts whole vectors of 16 in assembly and the tail in
// Go; both round as half.F32ToBF16 does.
func toBF16AVX512Go(dst []uint16, x []float32) {
	n := len(x) &^ 15
	if n > 0 {
		_ = dst[n-1]
		toBF16AVX512(&dst[0], &x[0], n)
	}
	toBF16Generic(dst[n:], x[n:])
}

// f16ToF32AVX512Go widens whole vectors of 16 in assembly and the tail
// through half's table; both are exact.
func f16ToF32AVX512Go(dst []float32, src []uint16) {
	n := len(src) &^ 15
	if n > 0 {
		_ = dst[n-1]
		f16ToF32AVX512(&dst[0], &src[0], n)
	}
	half.F16SliceToF32(dst[n:], src[n:])
}

// int4QuantAVX512Go runs the assembly quantizer on groups of a multiple
// of 16 inputs, and the Go one (same results) otherwise.
func int4QuantAVX512Go(x []float32, a, a2 []int8, d, d2 []float32, asum, asum2 []int32, group int) {
	G := len(d)
	if group%16 != 0 || G == 0 {
		int4QuantGeneric(x, a, a2, d, d2, asum, asum2, group)
		return
	}
	n := G * group
	_, _, _, _, _ = x[n-1], a[n-1], a2[n-1], d2[G-1], asum[G-1]
	_ = asum2[G-1]
	int4QuantAVX512(&x[0], &a[0], &a2[0], &d[0], &d2[0], &asum[0], &asum2[0], G, group)
}

// int4Strides returns the bytes of codes and of metadata per block.
func int4Strides(m *Int4Matrix) (qstride, mstride int) {
	return m.groups * m.Group / 8 * 64, m.groups * int4Meta
}

func int4Gemm1VNNIGo(dst []float32, m *Int4Matrix, b0, b1 int, acts *int4Acts, t int) {
	a, d, asum := acts.token(t)
	qs, ms := int4Strides(m)
	_ = dst[(b1-b0)*int4Block-1]
	int4Gemm1VNNI(&dst[0], 0, &m.qs[b0*qs], &m.meta[b0*ms], &a[0], &d[0], &asum[0], m.groups, m.Group/8, b1-b0, qs)
}

func int4GemvAVX2Go(dst []float32, m *Int4Matrix, b0, b1 int, acts *int4Acts, t int) {
	a, d, asum := acts.token(t)
	qs, ms := int4Strides(m)
	_ = dst[(b1-b0)*int4Block-1]
	int4GemvAVX2(&dst[0], &m.qs[b0*qs], &m.meta[b0*ms], &a[0], &d[0], &asum[0], m.groups, m.Group/8, b1-b0)
}

func int4Gemm4VNNIGo(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int) {
	a4, d4, s4 := acts.block(t0, 4)
	qs, ms := int4Strides(m)
	_ = dst[3*ldd+(b1-b0)*int4Block-1]
	int4Gemm4VNNI(&dst[0], ldd, &m.qs[b0*qs], &m.meta[b0*ms], &a4[0], &d4[0], &s4[0], m.groups, m.Group/8, b1-b0, qs)
}

func int4Gemm8x2VNNIGo(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int) {
	a8, d8, s8 := acts.block(t0, 8)
	qs, ms := int4Strides(m)
	_ = dst[7*ldd+(b1-b0)*int4Block-1]
	int4Gemm8x2VNNI(&dst[0], ldd, &m.qs[b0*qs], &m.meta[b0*ms], &a8[0], &d8[0], &s8[0], m.groups, m.Group/8, b1-b0, qs)
}

func int4Gemm4x4VNNIGo(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int) {
	a4, d4, s4 := acts.block(t0, 4)
	qs, ms := int4Strides(m)
	_ = dst[3*ldd+(b1-b0)*int4Block-1]
	int4Gemm4x4VNNI(&dst[0], ldd, &m.qs[b0*qs], &m.meta[b0*ms], &a4[0], &d4[0], &s4[0], m.groups, m.Group/8, b1-b0, qs)
}

func int4Gemm2VNNIGo(dst []float32, ldd int, m *Int4Matrix, b0, b1 int, acts *int4Acts, t0 int) {
	a2, d2, s2 := acts.block(t0, 2)
	qs, ms := int4Strides(m)
	_ = dst[ldd+(b1-b0)*int4Block-1]
	int4Gemm2VNNI(&dst[0], ldd, &m.qs[b0*qs], &m.meta[b0*ms], &a2[0], &d2[0], &s2[0], m.groups, m.Group/8, b1-b0, qs)
}

var int4UVNNI = &int4UKernels{unpack: int4UnpackGo, prefetch: prefetchSlice[byte], gemm: int4GemmUVNNIGo, addRows: int4AddRowsGo}

func int4Interleave4Go(dst, src []int8, k int) {
	_, _ = dst[4*k-1], src[4*k-1]
	int4Interleave4(&dst[0], &src[0], k)
}

func int4Interleave2Go(dst, src []int8, k int) {
	_, _ = dst[2*k-1], src[2*k-1]
	int4Interleave2(&dst[0], &src[0], k)
}

func int4AddRowsGo(dst []float32, ldd int, a, b []float32, lda, rows, width int) {
	if rows == 0 || width == 0 {
		return
	}
	_, _, _ = dst[(rows-1)*ldd+width-1], a[(rows-1)*lda+width-1], b[(rows-1)*lda+width-1]
	int4AddRows(&dst[0], ldd, &a[0], &b[0], lda, rows, width)
}

func int4UnpackGo(dst []byte, dstride int, src []byte, n int) {
	if n == 0 {
		return
	}
	_, _ = src[64*n-1], dst[(n-1)*dstride+127]
	int4Unpack(&dst[0], dstride, &src[0], n)
}

var int4GemmUVNNIFuncs = [...]func(facc *float32, fstride int, u, meta *byte, mstride int, a4 *int8, d4, af4 *float32, groups, tiles, rtiles, askip, dskip int){
	int4GemmU4x4VNNI, int4GemmU4x2VNNI, int4GemmU4x1VNNI,
	int4GemmU2x4VNNI, int4GemmU2x2VNNI, int4GemmU2x1VNNI,
}

func int4GemmUVNNIGo(rows, nb int, facc []float32, fstride int, u, meta []byte, mstride int, a []int8, d, af []float32, groups, tiles, rtiles, K, G int) {
	if rtiles == 0 {
		return
	}
	ri, ni := 0, 0 // rows 4, 2; nb 4, 2, 1
	if rows == 2 {
		ri = 1
	}
	if nb < 4 {
		ni = 3 - nb
	}
	// Bounds the assembly relies on: the last row tile starts rows·K
	// activations, rows·G steps and rows·fstride sums after the one before.
	last := rtiles - 1
	_ = facc[(rows*rtiles-1)*fstride+16*nb-1]
	_ = u[groups*tiles*nb*128-1]
	_ = meta[(nb-1)*mstride+groups*int4Meta-1]
	_ = a[last*rows*K+groups*tiles*8*rows-1]
	_, _ = d[last*rows*G+groups*rows-1], af[last*rows*G+groups*rows-1]
	askip, dskip := rows*K-groups*tiles*8*rows, 4*(rows*G-groups*rows)
	int4GemmUVNNIFuncs[3*ri+ni](&facc[0], fstride, &u[0], &meta[0], mstride, &a[0], &d[0], &af[0], groups, tiles, rtiles, askip, dskip)
}

// attendBlockAVX512 is AttendBlock over a float32 cache with the
// four-query kernels (attendBlockQ4), head by head where they do not apply.
func attendBlockAVX512(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []float32, n0, d, stride int, scale float32, scratch []float32) {
	if d == 0 || d%64 != 0 || rows*g < 4 {
		attendBlockLoop(out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
		return
	}
	attendBlockQ4(active, &f32BlockAVX512, out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
}

// f32BlockAVX512 is what attendBlockQ4 uses over a float32 cache.
var f32BlockAVX512 = kvAttn[float32]{lanes: 16, scores: avx512Ops.attnScores, sum: avx512Ops.attnSum, sumAdd: avx512Ops.attnSumAdd,
	scoresQ4: attnScoresQ4AVX512, sumQ4: attnSumQ4AVX512, sumAddQ4: attnSumAddQ4AVX512}

// prefetchSlice asks for the cache lines of s (PREFETCHT0).
func prefetchSlice[T any](s []T) {
	if len(s) > 0 {
		var zero T
		prefetchLines((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(zero)))
	}
}
