package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
)

// toBF16AVX512 rounds float32 to bfloat16 with integer operations, the
// same ones as half.F32ToBF16, so that every path stores the same bits
// (VCVTNEPS2BF16 would flush subnormals to zero instead):
//
//	u := bits(x[k])
//	if u&0x7fffffff > 0x7f800000 { dst[k] = u>>16 | 0x40 }  // NaN, kept quiet
//	else { dst[k] = (u + 0x7fff + (u>>16)&1) >> 16 }         // nearest, ties to even
func toBF16AVX512() {
	TEXT("toBF16AVX512", NOSPLIT, "func(dst *uint16, x *float32, n int)")
	Doc("toBF16AVX512 sets dst[k] to x[k] rounded to bfloat16, ties to even, for k < n,",
		"n a multiple of 16; NaNs stay NaNs (quiet). Bitwise half.F32ToBF16.")
	dst, x, n := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("n"), GP64())
	abs, inf, bias, one, quiet := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VPBROADCASTD(vconst("absmask", 0x7fffffff), abs)
	VPBROADCASTD(vconst("f32inf", 0x7f800000), inf)
	VPBROADCASTD(vconst("bf16bias", 0x7fff), bias)
	VPBROADCASTD(vconst("one32", 1), one)
	VPBROADCASTD(vconst("bf16quiet", 0x40), quiet)
	Label("loop")
	TESTQ(n, n)
	JZ(LabelRef("done"))
	u, hi, r, a := ZMM(), ZMM(), ZMM(), ZMM()
	nan := K()
	VMOVDQU32(mem(x, 0), u)
	VPSRLD(U8(16), u, hi)
	VPANDD(one, hi, r)
	VPADDD(bias, r, r)
	VPADDD(u, r, r)
	VPSRLD(U8(16), r, r)
	VPANDD(abs, u, a)
	VPCMPUD(U8(6), inf, a, nan) // a > inf, unsigned: NaN
	VPORD(quiet, hi, hi)
	VMOVDQU32(hi, nan, r)
	VPMOVDW(r, mem(dst, 0))
	ADDQ(U8(64), x)
	ADDQ(U8(32), dst)
	SUBQ(U8(16), n)
	JMP(LabelRef("loop"))
	Label("done")
	VZEROUPPER()
	RET()
}

// f16ToF32AVX512 widens IEEE binary16 to float32 with VCVTPH2PS, which is
// exact for every input (subnormals, infinities and NaNs included).
func f16ToF32AVX512() {
	TEXT("f16ToF32AVX512", NOSPLIT, "func(dst *float32, src *uint16, n int)")
	Doc("f16ToF32AVX512 sets dst[k] to the binary16 src[k] widened, for k < n, n a multiple",
		"of 16. Bitwise half.F16ToF32.")
	dst, src, n := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("n"), GP64())
	Label("loop")
	TESTQ(n, n)
	JZ(LabelRef("done"))
	v := ZMM()
	VCVTPH2PS(mem(src, 0), v)
	VMOVUPS(v, mem(dst, 0))
	ADDQ(U8(32), src)
	ADDQ(U8(64), dst)
	SUBQ(U8(16), n)
	JMP(LabelRef("loop"))
	Label("done")
	VZEROUPPER()
	RET()
}
