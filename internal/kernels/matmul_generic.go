package kernels

import (
	"math"

	"github.com/streamguard/streamguard/internal/half"
)

// The pure-Go matrix kernels reduce each output element with four partial
// sums (lane k%4, increasing k; a K%4 tail goes to lane 0) combined as
// (s0+s1)+(s2+s3). gemv and gemm4 share dot4 so their results agree bit for
// bit.

// dot4 continues the four-lane reduction of a·b over a chunk. len(a) must be
// a multiple of 4 unless the chunk is the last one.
func dot4(s *[4]float32, a, b []float32) {
	b = b[:len(a)]
	s0, s1, s2, s3 := s[0], s[1], s[2], s[3]
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	s[0], s[1], s[2], s[3] = s0, s1, s2, s3
}

func sum4(s *[4]float32) float32 { return (s[0] + s[1]) + (s[2] + s[3]) }

// widenChunk is the row chunk converted to float32 at a time; a multiple of 4.
const widenChunk = 256

func widenBF16(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, b := range src {
		dst[i] = math.Float32frombits(uint32(b) << 16)
	}
}

func bf16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

func identity(f float32) float32 { return f }

func gemvGenericF32(dst, x []float32, w []float32, kk, rows, ldw int) {
	x = x[:kk]
	for r := range rows {
		var s [4]float32
		dot4(&s, x, w[r*ldw:r*ldw+kk])
		dst[r] = sum4(&s)
	}
}

func gemm4GenericF32(dst []float32, ldd int, x []float32, ldx int, w []float32, kk, rows, ldw int) {
	for r := range rows {
		wr := w[r*ldw : r*ldw+kk]
		for t := range 4 {
			var s [4]float32
			dot4(&s, x[t*ldx:t*ldx+kk], wr)
			dst[t*ldd+r] = sum4(&s)
		}
	}
}

// genericHalf builds the 16-bit weight kernels from a chunk converter.
func genericHalf(widen func(dst []float32, src []uint16)) (gemv func([]float32, []float32, []uint16, int, int, int), gemm4 func([]float32, int, []float32, int, []uint16, int, int, int)) {
	gemv = func(dst, x []float32, w []uint16, kk, rows, ldw int) {
		var buf [widenChunk]float32
		for r := range rows {
			var s [4]float32
			wr := w[r*ldw : r*ldw+kk]
			for k0 := 0; k0 < kk; k0 += widenChunk {
				n := min(widenChunk, kk-k0)
				widen(buf[:n], wr[k0:k0+n])
				dot4(&s, x[k0:k0+n], buf[:n])
			}
			dst[r] = sum4(&s)
		}
	}
	gemm4 = func(dst []float32, ldd int, x []float32, ldx int, w []uint16, kk, rows, ldw int) {
		var buf [widenChunk]float32
		for r := range rows {
			var s [4][4]float32
			wr := w[r*ldw : r*ldw+kk]
			for k0 := 0; k0 < kk; k0 += widenChunk {
				n := min(widenChunk, kk-k0)
				widen(buf[:n], wr[k0:k0+n])
				for t := range 4 {
					dot4(&s[t], x[t*ldx+k0:t*ldx+k0+n], buf[:n])
				}
			}
			for t := range 4 {
				dst[t*ldd+r] = sum4(&s[t])
			}
		}
	}
	return gemv, gemm4
}

var (
	gemvGenericBF16, gemm4GenericBF16 = genericHalf(widenBF16)
	gemvGenericF16, gemm4GenericF16   = genericHalf(half.F16SliceToF32)
)

var genericImpl = impl{
	name: "go",
	f32:  matKernels[float32]{kstep: 1, gemv: gemvGenericF32, gemm4: gemm4GenericF32, widen: identity},
	bf16: matKernels[uint16]{kstep: 1, gemv: gemvGenericBF16, gemm4: gemm4GenericBF16, widen: bf16ToF32},
	f16:  matKernels[uint16]{kstep: 1, gemv: gemvGenericF16, gemm4: gemm4GenericF16, widen: half.F16ToF32},
	int4: int4Kernels{quant: int4QuantGeneric, gemv: int4GemvGeneric, gemm4: int4GemmLoop(int4GemvGeneric, 4), gemm2: int4GemmLoop(int4GemvGeneric, 2)},

	dot:     dotGeneric,
	axpy:    axpyGeneric,
	rmsNorm: rmsNormGeneric,
	siluMul: siluMulGeneric,
	softmax: softmaxGeneric,
	rope:    ropeGeneric,
	attend:  attendGeneric,
	// The generic attend already adds value rows into out one key at a
	// time, so running it head by head is the chunked form.
	attendGroup: attendGroupLoop(attendGeneric),
	bf16KV:      bf16KVGeneric,
	i8KV:        i8KVGeneric,
	mul:         mulGeneric,
	toBF16:      toBF16Generic,
	f16ToF32:    half.F16SliceToF32,
}
