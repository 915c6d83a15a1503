package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// awqQuantKernels emits the AVX-512 bodies of the AWQ weight quantizer's
// per-weight loops (kernels.ScaleRange, MinMax, QuantCodesOr, ClipDelta).
// They must give the bits the scalar Go loops give, so every operation
// mirrors one Go operation with the same operand order:
//   - x > m ? x : m is VMAXPS(m, x, m) and x < m ? x : m is VMINPS(m, x, m)
//     (Intel returns the second source on equality and on NaN, exactly as a
//     Go comparison that fails keeps the old value);
//   - division stays VDIVPS (a reciprocal multiply would round differently);
//   - round half to even is VRNDSCALEPS with immediate 0, which equals the
//     Go add-and-subtract-2^23 rounding for every input.
func awqQuantKernels() {
	awqRange(true)
	awqRange(false)
	awqQuantCodes()
	awqClipDelta()
	awqRoundEven()
}

// awqRange emits scaleRangeAVX512 (scaled) or minMaxAVX512: lane-wise
// running max and min with Go's strict comparisons, NaN collected in a
// mask register.
func awqRange(scaled bool) {
	if scaled {
		TEXT("scaleRangeAVX512", NOSPLIT, "func(dst, v, s *float32, n int) (mx, mn float32, nan bool)")
		Doc("scaleRangeAVX512 sets dst[i] = v[i]·s[i] for i < n (n a positive multiple",
			"of 16) and returns the max and min values and whether any is NaN; the",
			"sign of a zero max or min is not Go's (see kernels.ScaleRange).")
	} else {
		TEXT("minMaxAVX512", NOSPLIT, "func(v *float32, n int) (mx, mn float32, nan bool)")
		Doc("minMaxAVX512 returns the max and min of v[:n] (n a positive multiple of",
			"16) and whether any is NaN; the sign of a zero max or min is not Go's.")
	}
	var dst, s Register
	if scaled {
		dst, s = Load(Param("dst"), GP64()), Load(Param("s"), GP64())
	}
	v, n := Load(Param("v"), GP64()), Load(Param("n"), GP64())
	load := func(y VecVirtual) {
		VMOVUPS(mem(v, 0), y)
		if scaled {
			VMULPS(mem(s, 0), y, y) // y = v·s, v the first source as in Go
			VMOVUPS(y, mem(dst, 0))
			ADDQ(U8(64), s)
			ADDQ(U8(64), dst)
		}
		ADDQ(U8(64), v)
	}
	mx, mn, y := ZMM(), ZMM(), ZMM()
	nanAcc, k := K(), K()
	load(mx)
	VMOVAPS(mx, mn)
	VCMPPS(U8(3), mx, mx, nanAcc) // unordered: NaN lanes
	SUBQ(U8(16), n)
	JZ(LabelRef(awqLabel(scaled, "done")))
	Label(awqLabel(scaled, "loop"))
	load(y)
	VMAXPS(mx, y, mx)
	VMINPS(mn, y, mn)
	VCMPPS(U8(3), y, y, k)
	KORW(k, nanAcc, nanAcc)
	SUBQ(U8(16), n)
	JNZ(LabelRef(awqLabel(scaled, "loop")))
	Label(awqLabel(scaled, "done"))
	Store(hmax(mx), ReturnIndex(0))
	Store(hmin(mn), ReturnIndex(1))
	bits, flag := GP32(), GP8()
	KMOVW(nanAcc, bits)
	TESTL(bits, bits)
	SETNE(flag)
	Store(flag, ReturnIndex(2))
	VZEROUPPER()
	RET()
}

func awqLabel(scaled bool, s string) string {
	if scaled {
		return "scaleRange_" + s
	}
	return "minMax_" + s
}

// hmin returns the smallest lane of v (no NaNs) in the low lane of an XMM
// register.
func hmin(v VecVirtual) VecVirtual {
	y, x, t := YMM(), XMM(), XMM()
	VEXTRACTF64X4(U8(1), v, y)
	VMINPS(y, v.AsY(), y)
	VEXTRACTF32X4(U8(1), y, x)
	VMINPS(x, y.AsX(), x)
	VMOVHLPS(x, x, t)
	VMINPS(t, x, x)
	VMOVSHDUP(x, t)
	VMINSS(t, x, x)
	return x
}

// clampCode is Go's clampCode: x < 0 → 0, then x > 15 → 15, NaN and −0
// kept.
func clampCode(x, zero, c15 VecVirtual) {
	VMAXPS(x, zero, x) // 0 > x ? 0 : x
	VMINPS(x, c15, x)  // 15 < x ? 15 : x
}

// awqQuantCodes emits quantCodesOrAVX512.
func awqQuantCodes() {
	TEXT("quantCodesOrAVX512", NOSPLIT, "func(acc *uint32, v *float32, n int, sf, z float32, shift uint64)")
	Doc("quantCodesOrAVX512 ORs uint32(clampCode(roundEven(v[i]/sf)+z))<<shift into",
		"acc[i] for i < n (n a positive multiple of 16); see kernels.QuantCodesOr.")
	acc, v, n := Load(Param("acc"), GP64()), Load(Param("v"), GP64()), Load(Param("n"), GP64())
	sf, z, zero, c15, low := ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VBROADCASTSS(Load(Param("sf"), XMM()), sf)
	VBROADCASTSS(Load(Param("z"), XMM()), z)
	VPXORD(zero, zero, zero)
	VBROADCASTSS(fconst("awqf15", 15), c15)
	VPBROADCASTD(vconst("awqi15", 15), low)
	sh := XMM()
	VMOVQ(Load(Param("shift"), GP64()), sh)
	Label("quantCodes_loop")
	y := ZMM()
	VMOVUPS(mem(v, 0), y)
	VDIVPS(sf, y, y)
	VRNDSCALEPS(U8(0), y, y)
	VADDPS(z, y, y)
	clampCode(y, zero, c15)
	VCVTTPS2DQ(y, y)
	// Keep the code bits only: a NaN lane converts to 0x80000000, and
	// Go's uint32(NaN) on amd64 is 0, which the mask reproduces.
	VPANDD(low, y, y)
	VPSLLD(sh, y, y)
	VPORD(mem(acc, 0), y, y)
	VMOVDQU32(y, mem(acc, 0))
	ADDQ(U8(64), v)
	ADDQ(U8(64), acc)
	SUBQ(U8(16), n)
	JNZ(LabelRef("quantCodes_loop"))
	VZEROUPPER()
	RET()
}

// awqClipDelta emits clipDeltaAVX512.
func awqClipDelta() {
	TEXT("clipDeltaAVX512", NOSPLIT, "func(dst, v *float32, n int, bound, nbound, sf, z float32)")
	Doc("clipDeltaAVX512 sets dst[i] = (clampCode(roundEven(clamp(v[i], nbound,",
		"bound)/sf)+z)−z)·sf − v[i] for i < n (n a positive multiple of 16); see",
		"kernels.ClipDelta.")
	dst, v, n := Load(Param("dst"), GP64()), Load(Param("v"), GP64()), Load(Param("n"), GP64())
	b, nb, sf, z, zero, c15 := ZMM(), ZMM(), ZMM(), ZMM(), ZMM(), ZMM()
	VBROADCASTSS(Load(Param("bound"), XMM()), b)
	VBROADCASTSS(Load(Param("nbound"), XMM()), nb)
	VBROADCASTSS(Load(Param("sf"), XMM()), sf)
	VBROADCASTSS(Load(Param("z"), XMM()), z)
	VPXORD(zero, zero, zero)
	VBROADCASTSS(fconst("awqf15", 15), c15)
	Label("clipDelta_loop")
	x, c := ZMM(), ZMM()
	VMOVUPS(mem(v, 0), x)
	VMINPS(x, b, c)  // bound < x ? bound : x
	VMAXPS(c, nb, c) // −bound > c ? −bound : c
	VDIVPS(sf, c, c)
	VRNDSCALEPS(U8(0), c, c)
	VADDPS(z, c, c)
	clampCode(c, zero, c15)
	VSUBPS(z, c, c)
	VMULPS(sf, c, c)
	VSUBPS(x, c, c)
	VMOVUPS(c, mem(dst, 0))
	ADDQ(U8(64), v)
	ADDQ(U8(64), dst)
	SUBQ(U8(16), n)
	JNZ(LabelRef("clipDelta_loop"))
	VZEROUPPER()
	RET()
}

// awqRoundEven emits roundEvenAVX512, the rounding step alone, so that the
// tests can compare it with Go's roundEven over every float32 pattern
// class (the other kernels clamp right after rounding, which hides most
// inputs).
func awqRoundEven() {
	TEXT("roundEvenAVX512", NOSPLIT, "func(dst, v *float32, n int)")
	Doc("roundEvenAVX512 sets dst[i] to v[i] rounded half to even (VRNDSCALEPS",
		"immediate 0) for i < n (n a positive multiple of 16).")
	dst, v, n := Load(Param("dst"), GP64()), Load(Param("v"), GP64()), Load(Param("n"), GP64())
	Label("roundEven_loop")
	y := ZMM()
	VRNDSCALEPS(U8(0), mem(v, 0), y)
	VMOVUPS(y, mem(dst, 0))
	ADDQ(U8(64), v)
	ADDQ(U8(64), dst)
	SUBQ(U8(16), n)
	JNZ(LabelRef("roundEven_loop"))
	VZEROUPPER()
	RET()
}
