// Command _asm generates the amd64 assembly of package kernels with avo.
//
//	cd internal/kernels && go generate
package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// isa describes one vector instruction set the kernels are generated for.
type isa struct {
	name  string // suffix of generated function names
	lanes int    // float32 lanes per vector
	// gemmRows is the output rows per register tile of gemm4 (4 tokens);
	// gemvRows the rows per group of gemv.
	gemmRows, gemvRows int
}

var (
	avx2   = isa{name: "AVX2", lanes: 8, gemmRows: 2, gemvRows: 4}
	avx512 = isa{name: "AVX512", lanes: 16, gemmRows: 4, gemvRows: 4}
)

// vec allocates a full-width vector register.
func (i isa) vec() VecVirtual {
	if i.lanes == 16 {
		return ZMM()
	}
	return YMM()
}

// bytes is the width of one vector in bytes.
func (i isa) bytes() int { return 4 * i.lanes }

// zero clears v.
func zero(v VecVirtual) { VXORPS(v, v, v) }

// reduce sums the lanes of v into the low lane of the returned XMM register
// in one fixed tree: halves are added until four lanes remain, then
// (l0+l2)+(l1+l3). Every kernel reduces through this function, which is
// what makes an element's value independent of the path that computed it.
func (i isa) reduce(v VecVirtual) VecVirtual {
	y := v
	if i.lanes == 16 {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		VADDPS(y, v.AsY(), y)
	}
	x := XMM()
	if i.lanes == 16 {
		VEXTRACTF32X4(U8(1), y, x) // EVEX form: y may be Y16-Y31
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	VADDPS(x, y.AsX(), x)
	t := XMM()
	VMOVHLPS(x, x, t)
	VADDPS(t, x, x)
	VMOVSHDUP(x, t)
	VADDSS(t, x, x)
	return x
}

func main() {
	ConstraintExpr("!purego")
	for _, i := range []isa{avx2, avx512} {
		for _, wt := range weightTypes {
			gemv(i, wt)
			gemm4(i, wt)
			gemm2(i, wt)
		}
		ops(i)
	}
	int4Kernels()
	int4QuantAVX512()
	readSum()
	awqQuantKernels()
	toBF16AVX512()
	f16ToF32AVX512()
	attentionKV()
	attentionI4()
	Generate()
}

// mem is a shorthand for a memory operand at base+disp.
func mem(base Register, disp int) Mem { return Mem{Base: base, Disp: disp} }

// row4 addresses row r < 4 of an operand whose rows are step bytes apart,
// with step3 = 3·step in a register: (base), (base)(step*1),
// (base)(step*2), (base)(step3*1).
func row4(base, step, step3 Register, r, disp int) Mem {
	switch r {
	case 0:
		return Mem{Base: base, Disp: disp}
	case 3:
		return Mem{Base: base, Index: step3, Scale: 1, Disp: disp}
	}
	return Mem{Base: base, Index: step, Scale: uint8(r), Disp: disp}
}
