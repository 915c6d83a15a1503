package kernels

// impl is one complete implementation of the package's kernels. The pure-Go
// implementation is always registered; architecture files add the ones the
// CPU supports, best last.
type impl struct {
	name string

	f32  matKernels[float32]
	bf16 matKernels[uint16]
	f16  matKernels[uint16]
	int4 int4Kernels

	dot     func(a, b []float32) float32
	axpy    func(alpha float32, x, y []float32)
	rmsNorm func(dst, x, w []float32, eps float32)
	siluMul func(dst, gate, up []float32)
	softmax func(x []float32)
	rope    func(x, cos, sin []float32)
	attend  func(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32)
	// attendGroup is AttendGroup; each head must equal attend's result.
	attendGroup func(out, q []float32, g int, k, v []float32, n, d, stride int, scale float32, scratch []float32)
	// attendBlock, when set, is AttendBlock; each head must equal
	// attend's result. Nil runs AttendBlock row by row.
	attendBlock func(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []float32, n0, d, stride int, scale float32, scratch []float32)

	// Attention over bfloat16, int8 and 4-bit caches (attend_kv.go,
	// attend_i8.go, attend_i4.go), and the
	// elementwise product that applies the int8 scales.
	bf16KV kvAttn[uint16]
	i8KV   kvAttn[int8]
	i8Dot  i8Dot
	i4KV   i4Attn // 4-bit cache (attend_i4.go)
	mul    func(dst, x, w []float32)
	// toBF16 is ToBF16 (the bfloat16 cache's stores).
	toBF16 func(dst []uint16, x []float32)
	// f16ToF32 is F16ToF32 (a float16 embedding's rows).
	f16ToF32 func(dst []float32, src []uint16)
}

// matKernels computes row strips of a matrix product for one weight type.
// The kernels cover the first kk = K &^ (kstep-1) inputs of each row; the
// driver adds the remaining K-kk products one by one in increasing k, so
// every output element goes through the same operations on every path.
type matKernels[W float32 | uint16] struct {
	kstep int
	// gemv sets dst[r] (r < rows) to the reduction of x[:kk] against
	// w[r*ldw:][:kk].
	gemv func(dst, x []float32, w []W, kk, rows, ldw int)
	// gemm4 does the same for 4 tokens: x rows at stride ldx, dst rows at
	// stride ldd. Each element must equal what gemv computes for it.
	gemm4 func(dst []float32, ldd int, x []float32, ldx int, w []W, kk, rows, ldw int)
	// gemm2, when set, is gemm4 for 2 tokens (one pass over the weights
	// where two gemv calls make two); each element again what gemv gives.
	gemm2 func(dst []float32, ldd int, x []float32, ldx int, w []W, kk, rows, ldw int)
	// widen converts one weight to float32 for the K tail.
	widen func(W) float32
}

var (
	impls  = []*impl{&genericImpl}
	active = &genericImpl
)

// register adds an implementation the CPU supports and makes it the default.
func register(i *impl) {
	impls = append(impls, i)
	active = i
}

// implNames lists the registered implementations, pure Go first.
func implNames() []string {
	names := make([]string, len(impls))
	for i, im := range impls {
		names[i] = im.name
	}
	return names
}

// useImpl makes the named implementation active and returns a function that
// restores the previous one; it is for tests and benchmarks, which must not
// run in parallel with kernel calls while switching.
func useImpl(name string) (restore func(), ok bool) {
	for _, im := range impls {
		if im.name == name {
			prev := active
			active = im
			return func() { active = prev }, true
		}
	}
	return func() {}, false
}
