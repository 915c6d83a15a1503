package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// int4QuantAVX512 quantizes one token's activations for the int4 kernels:
// per group, a coarse int8 row a (step d = max|x|/127) and a residual int8
// row a2 (step d2 = d/254) of x − a·d, with their sums. The float steps are
// the ones int4QuantGeneric writes in Go, so both give the same bytes.
func int4QuantAVX512() {
	TEXT("int4QuantAVX512", NOSPLIT, "func(x *float32, a, a2 *int8, d, d2 *float32, s, s2 *int32, groups, group int)")
	Doc("int4QuantAVX512 quantizes groups×group activations x (group a multiple",
		"of 16) into coarse and residual int8 codes; see int4QuantGeneric.")
	x, a, a2 := Load(Param("x"), GP64()), Load(Param("a"), GP64()), Load(Param("a2"), GP64())
	dp, d2p := Load(Param("d"), GP64()), Load(Param("d2"), GP64())
	sp, s2p := Load(Param("s"), GP64()), Load(Param("s2"), GP64())
	gn := Load(Param("groups"), GP64())
	absMask, lo, hi := ZMM(), ZMM(), ZMM()
	VPBROADCASTD(vconst("absmask", 0x7FFFFFFF), absMask)
	VPBROADCASTD(vconst("i127", 127), hi)
	VPBROADCASTD(vconst("im127", 0xFFFFFF81), lo)
	Label("qgroup")
	// Pass 1: the largest |x|, and x−x summed (NaN as soon as any x is
	// NaN or ±Inf).
	vmax, bad := ZMM(), ZMM()
	VXORPS(vmax, vmax, vmax)
	VXORPS(bad, bad, bad)
	vn := Load(Param("group"), GP64())
	SHRQ(U8(4), vn)
	p := GP64()
	MOVQ(x, p)
	Label("qmax")
	{
		v, t := ZMM(), ZMM()
		VMOVUPS(mem(p, 0), v)
		VSUBPS(v, v, t)
		VADDPS(t, bad, bad)
		VANDPS(absMask, v, v)
		VMAXPS(v, vmax, vmax)
		ADDQ(U8(64), p)
		DECQ(vn)
		JNZ(LabelRef("qmax"))
	}
	amax := hmax(vmax)
	bx := hsumF(bad) // NaN iff some lane is NaN
	UCOMISS(bx, bx)
	JP(LabelRef("qnan"))
	tiny := XMM()
	MOVSS(vconst("tinygroup", 0x0D800000), tiny) // int4TinyGroup = 2⁻¹⁰⁰
	UCOMISS(tiny, amax)
	JCS(LabelRef("qzero")) // amax < tiny
	// Steps: inv = 127/amax, d = amax/127, inv2 = inv·254, d2 = d/254.
	c127, c254 := XMM(), XMM()
	MOVSS(vconst("f127", 0x42FE0000), c127)
	MOVSS(vconst("f254", 0x437E0000), c254)
	inv, dd, inv2, dd2 := XMM(), XMM(), XMM(), XMM()
	VDIVSS(amax, c127, inv)
	VDIVSS(c127, amax, dd)
	VMULSS(c254, inv, inv2)
	VDIVSS(c254, dd, dd2)
	MOVSS(dd, mem(dp, 0))
	MOVSS(dd2, mem(d2p, 0))
	vinv, vd, vinv2 := ZMM(), ZMM(), ZMM()
	VBROADCASTSS(inv, vinv)
	VBROADCASTSS(dd, vd)
	VBROADCASTSS(inv2, vinv2)
	sacc, sacc2 := ZMM(), ZMM()
	VPXORD(sacc, sacc, sacc)
	VPXORD(sacc2, sacc2, sacc2)
	Load(Param("group"), vn)
	SHRQ(U8(4), vn)
	Label("qcode")
	{
		v, y, q, qf, y2, q2 := ZMM(), ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
		VMOVUPS(mem(x, 0), v)
		VMULPS(vinv, v, y)
		VCVTPS2DQ(y, q) // round to nearest even (MXCSR default)
		VPMINSD(hi, q, q)
		VPMAXSD(lo, q, q)
		VPMOVDB(q, mem(a, 0))
		VPADDD(q, sacc, sacc)
		VCVTDQ2PS(q, qf)
		VMULPS(vd, qf, qf)
		VSUBPS(qf, v, v) // residual x − q·d
		VMULPS(vinv2, v, y2)
		VCVTPS2DQ(y2, q2)
		VPMINSD(hi, q2, q2)
		VPMAXSD(lo, q2, q2)
		VPMOVDB(q2, mem(a2, 0))
		VPADDD(q2, sacc2, sacc2)
		ADDQ(U8(64), x)
		ADDQ(U8(16), a)
		ADDQ(U8(16), a2)
		DECQ(vn)
		JNZ(LabelRef("qcode"))
	}
	MOVL(hsumD(sacc), mem(sp, 0))
	MOVL(hsumD(sacc2), mem(s2p, 0))
	JMP(LabelRef("qnext"))

	// A zero group contributes nothing; a NaN or Inf group poisons its
	// outputs through d = NaN.
	Label("qnan")
	nan := GP32()
	MOVL(U32(0x7FC00000), nan)
	MOVL(nan, mem(dp, 0))
	MOVL(nan, mem(d2p, 0))
	JMP(LabelRef("qclear"))
	Label("qzero")
	MOVL(U32(0), mem(dp, 0))
	MOVL(U32(0), mem(d2p, 0))
	Label("qclear")
	MOVL(U32(0), mem(sp, 0))
	MOVL(U32(0), mem(s2p, 0))
	zv := ZMM()
	VPXORD(zv, zv, zv)
	Load(Param("group"), vn)
	SHRQ(U8(4), vn)
	Label("qclr")
	VMOVDQU8(zv.AsX(), mem(a, 0))
	VMOVDQU8(zv.AsX(), mem(a2, 0))
	ADDQ(U8(64), x)
	ADDQ(U8(16), a)
	ADDQ(U8(16), a2)
	DECQ(vn)
	JNZ(LabelRef("qclr"))

	Label("qnext")
	ADDQ(U8(4), dp)
	ADDQ(U8(4), d2p)
	ADDQ(U8(4), sp)
	ADDQ(U8(4), s2p)
	DECQ(gn)
	JNZ(LabelRef("qgroup"))
	VZEROUPPER()
	RET()
}

// hmax returns the largest lane of v (no NaNs) in the low lane of an XMM
// register.
func hmax(v VecVirtual) VecVirtual {
	y, x, t := YMM(), XMM(), XMM()
	VEXTRACTF64X4(U8(1), v, y)
	VMAXPS(y, v.AsY(), y)
	VEXTRACTF32X4(U8(1), y, x)
	VMAXPS(x, y.AsX(), x)
	VMOVHLPS(x, x, t)
	VMAXPS(t, x, x)
	VMOVSHDUP(x, t)
	VMAXSS(t, x, x)
	return x
}

// hsumF returns the sum of the lanes of v in the low lane of an XMM
// register (any order: it only probes for NaN).
func hsumF(v VecVirtual) VecVirtual {
	y, x, t := YMM(), XMM(), XMM()
	VEXTRACTF64X4(U8(1), v, y)
	VADDPS(y, v.AsY(), y)
	VEXTRACTF32X4(U8(1), y, x)
	VADDPS(x, y.AsX(), x)
	VMOVHLPS(x, x, t)
	VADDPS(t, x, x)
	VMOVSHDUP(x, t)
	VADDSS(t, x, x)
	return x
}

// hsumD returns the sum of the int32 lanes of v in a general register.
func hsumD(v VecVirtual) GPVirtual {
	y, x, t := YMM(), XMM(), XMM()
	VEXTRACTI64X4(U8(1), v, y)
	VPADDD(y, v.AsY(), y)
	VEXTRACTI32X4(U8(1), y, x)
	VPADDD(x, y.AsX(), x)
	VPSHUFD(U8(0x4E), x, t)
	VPADDD(t, x, x)
	VPSHUFD(U8(0xB1), x, t)
	VPADDD(t, x, x)
	r := GP32()
	VMOVD(x, r)
	return r
}
