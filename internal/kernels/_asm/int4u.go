package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// int4UnpackedKernels emits the prefill path of the INT4 product: the
// codes of a few blocks are unpacked once into bytes (int4Unpack), then
// every 4-row (or 2-row) tile of activations is multiplied with them
// (int4GemmU) with no nibble masking in the inner loop, so VPDPBUSD has
// the vector units almost to itself.
func int4UnpackedKernels() {
	int4Unpack()
	prefetchLines()
	int4AddRows()
	int4Interleave4()
	int4Interleave2()
	for _, rows := range []int{4, 2} {
		for _, nb := range []int{4, 2, 1} {
			int4GemmU(rows, nb)
		}
	}
}

// prefetchLines asks for the lines of the next pass's packed codes while
// the current pass multiplies (int4RowsU): the unpack that reads them
// first would otherwise wait for memory with nothing else to do.
func prefetchLines() {
	TEXT("prefetchLines", NOSPLIT, "func(p *byte, n int)")
	Doc("prefetchLines issues PREFETCHT0 for each 64-byte line of p[:n], n > 0.")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	end := GP64()
	LEAQ(Mem{Base: p, Index: n, Scale: 1}, end)
	Label("line")
	PREFETCHT0(mem(p, 0))
	ADDQ(U8(64), p)
	CMPQ(p, end)
	JB(LabelRef("line"))
	RET()
}

// int4Unpack splits n 64-byte code tiles into their low and high nibbles.
func int4Unpack() {
	TEXT("int4Unpack", NOSPLIT, "func(dst *byte, dstride int, src *byte, n int)")
	Doc("int4Unpack splits n consecutive 64-byte tiles of src into bytes: tile i's",
		"low nibbles go to dst[i*dstride:][:64] and its high nibbles to the 64",
		"bytes after them.")
	i := avx512
	dst, stride := Load(Param("dst"), GP64()), Load(Param("dstride"), GP64())
	src, n := Load(Param("src"), GP64()), Load(Param("n"), GP64())
	mask := i.vec()
	VMOVDQU32(vconst("nibble", 0x0F0F0F0F), mask)
	TESTQ(n, n)
	JZ(LabelRef("unpack_ret"))
	Label("unpack")
	lo, hi := i.vec(), i.vec()
	VMOVDQU32(mem(src, 0), lo)
	VPSRLW(U8(4), lo, hi)
	VPANDD(mask, lo, lo)
	VPANDD(mask, hi, hi)
	VMOVDQU32(lo, mem(dst, 0))
	VMOVDQU32(hi, mem(dst, 64))
	ADDQ(U32(64), src)
	ADDQ(stride, dst)
	DECQ(n)
	JNZ(LabelRef("unpack"))
	Label("unpack_ret")
	VZEROUPPER()
	RET()
}

// int4GemmU generates the rows × nb-block kernel over unpacked codes. Per
// group it forms the exact integer sums like int4Gemm4VNNI, then folds
// them into float accumulators kept in memory (facc), so a call may cover
// any range of groups and the next call continues where it stopped. The
// zero-point term is subtracted in float32: z·A and Σq·a − z·A are
// integers below 2^24 for groups up to 4096 inputs, so every step is
// exact and the result is bitwise that of the integer epilogue.
func int4GemmU(rows, nb int) {
	name := fmt.Sprintf("int4GemmU%dx%dVNNI", rows, nb)
	TEXT(name, NOSPLIT, "func(facc *float32, fstride int, u *byte, meta *byte, mstride int, a4 *int8, d4 *float32, af4 *float32, groups, tiles, rtiles, askip, dskip int)")
	Doc(fmt.Sprintf("%s adds to facc[t*fstride+16b+i] (row t < %d·rtiles, block b < %d)", name, rows, nb),
		"the products of groups 0 <= g < groups, in increasing g:",
		"",
		"\tfacc = fma(s·d, float32(Σ_k q·a) − z·A, facc)",
		"",
		fmt.Sprintf("u holds the codes unpacked by int4Unpack, [g][tile][block][lo, hi]; block b's"),
		"record for group g is at meta[b*mstride+48g:]. Each tile of rows has its",
		fmt.Sprintf("activations interleaved as for int4Gemm%dVNNI, with steps d4[%dg+t] and", rows, rows),
		fmt.Sprintf("activation sums af4[%dg+t] as float32; the next tile's start askip bytes", rows),
		"after this tile's a4 ends and dskip bytes after its d4 and af4 end.")
	i := avx512
	facc, u := Load(Param("facc"), GP64()), GP64()
	fs, fs3 := Load(Param("fstride"), GP64()), GP64()
	SHLQ(U8(2), fs)
	LEAQ(Mem{Base: fs, Index: fs, Scale: 2}, fs3)
	frow := func(t, disp int) Mem { return row4(facc, fs, fs3, t, disp) }
	ap, dp, fp := Load(Param("a4"), GP64()), Load(Param("d4"), GP64()), Load(Param("af4"), GP64())
	mp := make([]Register, nb)
	for b := range mp {
		mp[b] = GP64()
	}
	gn := GP64()
	// One pass of the group loop per tile of rows: the codes and their
	// records are read again from the start, so a single call covers every
	// row tile and the per-call cost is paid once per block pass.
	Label(name + "_rtile")
	MOVQ(paramAddr("meta"), mp[0])
	if nb > 1 {
		ms := GP64()
		MOVQ(paramAddr("mstride"), ms)
		for b := 1; b < nb; b++ {
			LEAQ(Mem{Base: mp[b-1], Index: ms, Scale: 1}, mp[b])
		}
	}
	MOVQ(paramAddr("u"), u)
	MOVQ(paramAddr("groups"), gn)
	Label(name + "_group")
	iacc := make([][]VecVirtual, rows)
	for t := range iacc {
		iacc[t] = make([]VecVirtual, nb)
		for b := range nb {
			iacc[t][b] = i.vec()
			VPXORD(iacc[t][b], iacc[t][b], iacc[t][b])
		}
	}
	tn := Load(Param("tiles"), GP64())
	Label(name + "_tile")
	alo, ahi := make([]VecVirtual, rows), make([]VecVirtual, rows)
	for t := range rows {
		alo[t], ahi[t] = i.vec(), i.vec()
		VPBROADCASTD(mem(ap, 4*t), alo[t])
		VPBROADCASTD(mem(ap, 4*rows+4*t), ahi[t])
	}
	for b := range nb {
		lo, hi := i.vec(), i.vec()
		VMOVDQU32(mem(u, 128*b), lo)
		VMOVDQU32(mem(u, 128*b+64), hi)
		for t := range rows {
			vpdpbusd(alo[t], lo, iacc[t][b])
			vpdpbusd(ahi[t], hi, iacc[t][b])
		}
	}
	ADDQ(U32(128*nb), u)
	ADDQ(U32(8*rows), ap)
	DECQ(tn)
	JNZ(LabelRef(name + "_tile"))
	for b := range nb {
		z, s := i.vec(), i.vec()
		VPMOVZXBD(mem(mp[b], 32), z)
		VCVTDQ2PS(z, z)
		VCVTPH2PS(mem(mp[b], 0), s)
		for t := range rows {
			f, sd, acc := iacc[t][b], i.vec(), i.vec()
			VCVTDQ2PS(f, f)
			VFNMADD231PS_BCST(mem(fp, 4*t), z, f) // f −= z·A, exact
			VMULPS_BCST(mem(dp, 4*t), s, sd)
			VMOVUPS(frow(t, 64*b), acc)
			VFMADD231PS(sd, f, acc)
			VMOVUPS(acc, frow(t, 64*b))
		}
		ADDQ(U32(48), mp[b])
	}
	ADDQ(U32(4*rows), dp)
	ADDQ(U32(4*rows), fp)
	DECQ(gn)
	JNZ(LabelRef(name + "_group"))
	ADDQ(paramAddr("askip"), ap)
	ADDQ(paramAddr("dskip"), dp)
	ADDQ(paramAddr("dskip"), fp)
	LEAQ(Mem{Base: facc, Index: fs, Scale: uint8(rows)}, facc)
	DECQ(paramAddr("rtiles"))
	JNZ(LabelRef(name + "_rtile"))
	VZEROUPPER()
	RET()
}

// paramAddr is the memory operand of a scalar argument, for arguments
// read (or counted down) inside a loop without holding a register.
func paramAddr(name string) Mem {
	b, err := Param(name).Resolve()
	if err != nil {
		panic(err)
	}
	return b.Addr
}

// int4AddRows emits the final step of an exact-mode product: each token's
// coarse and residual outputs added into its row of dst.
func int4AddRows() {
	TEXT("int4AddRows", NOSPLIT, "func(dst *float32, ldd int, a, b *float32, lda, rows, width int)")
	Doc("int4AddRows sets dst[t*ldd+i] = a[t*lda+i] + b[t*lda+i] for t < rows and",
		"i < width, width a positive multiple of 16.")
	i := avx512
	dst, ldd := Load(Param("dst"), GP64()), Load(Param("ldd"), GP64())
	a, b, lda := Load(Param("a"), GP64()), Load(Param("b"), GP64()), Load(Param("lda"), GP64())
	rows, width := Load(Param("rows"), GP64()), Load(Param("width"), GP64())
	SHLQ(U8(2), ldd)
	SHLQ(U8(2), lda)
	SHLQ(U8(2), width)
	TESTQ(rows, rows)
	JZ(LabelRef("addrows_ret"))
	Label("addrows_row")
	off := GP64()
	XORQ(off, off)
	Label("addrows_col")
	x, y := i.vec(), i.vec()
	VMOVUPS(Mem{Base: a, Index: off, Scale: 1}, x)
	VMOVUPS(Mem{Base: b, Index: off, Scale: 1}, y)
	VADDPS(y, x, x)
	VMOVUPS(x, Mem{Base: dst, Index: off, Scale: 1})
	ADDQ(U8(64), off)
	CMPQ(off, width)
	JL(LabelRef("addrows_col"))
	ADDQ(ldd, dst)
	ADDQ(lda, a)
	ADDQ(lda, b)
	DECQ(rows)
	JNZ(LabelRef("addrows_row"))
	Label("addrows_ret")
	VZEROUPPER()
	RET()
}

// int4Interleave4 emits the transposition that interleaves 4 activation
// rows by 4-byte word for the 4-row kernels.
func int4Interleave4() {
	TEXT("int4Interleave4", NOSPLIT, "func(dst, src *int8, k int)")
	Doc("int4Interleave4 sets dst[16w+4r:][:4] = src[r*k+4w:][:4] for rows r < 4 and",
		"words w < k/4, k a positive multiple of 64.")
	dst, src, k := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("k"), GP64())
	k3, end := GP64(), GP64()
	LEAQ(Mem{Base: k, Index: k, Scale: 2}, k3)
	LEAQ(Mem{Base: src, Index: k, Scale: 1}, end)
	Label("il4")
	r := make([]VecVirtual, 4)
	for i := range r {
		r[i] = ZMM()
	}
	VMOVDQU32(mem(src, 0), r[0])
	VMOVDQU32(Mem{Base: src, Index: k, Scale: 1}, r[1])
	VMOVDQU32(Mem{Base: src, Index: k, Scale: 2}, r[2])
	VMOVDQU32(Mem{Base: src, Index: k3, Scale: 1}, r[3])
	// In each 128-bit lane L: x[j] = words 4L+j of rows 0..3.
	ablo, abhi, cdlo, cdhi := ZMM(), ZMM(), ZMM(), ZMM()
	VPUNPCKLDQ(r[1], r[0], ablo)
	VPUNPCKHDQ(r[1], r[0], abhi)
	VPUNPCKLDQ(r[3], r[2], cdlo)
	VPUNPCKHDQ(r[3], r[2], cdhi)
	x := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	VPUNPCKLQDQ(cdlo, ablo, x[0])
	VPUNPCKHQDQ(cdlo, ablo, x[1])
	VPUNPCKLQDQ(cdhi, abhi, x[2])
	VPUNPCKHQDQ(cdhi, abhi, x[3])
	// Transpose the 128-bit lanes: output vector L = lane L of x[0..3].
	y := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	VSHUFI32X4(U8(0x44), x[1], x[0], y[0])
	VSHUFI32X4(U8(0xEE), x[1], x[0], y[1])
	VSHUFI32X4(U8(0x44), x[3], x[2], y[2])
	VSHUFI32X4(U8(0xEE), x[3], x[2], y[3])
	o := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	VSHUFI32X4(U8(0x88), y[2], y[0], o[0])
	VSHUFI32X4(U8(0xDD), y[2], y[0], o[1])
	VSHUFI32X4(U8(0x88), y[3], y[1], o[2])
	VSHUFI32X4(U8(0xDD), y[3], y[1], o[3])
	for i := range o {
		VMOVDQU32(o[i], mem(dst, 64*i))
	}
	ADDQ(U32(256), dst)
	ADDQ(U32(64), src)
	CMPQ(src, end)
	JL(LabelRef("il4"))
	VZEROUPPER()
	RET()
}

// int4Interleave2 emits the interleaving of a pair of activation rows by
// 4-byte word for the 2-row kernels: a streamed token's coarse and
// residual rows before every product of a decode step, where the Go loop
// it replaces was serial work between parallel products.
func int4Interleave2() {
	TEXT("int4Interleave2", NOSPLIT, "func(dst, src *int8, k int)")
	Doc("int4Interleave2 sets dst[8w+4r:][:4] = src[r*k+4w:][:4] for rows r < 2 and",
		"words w < k/4, k a positive multiple of 64.")
	dst, src, k := Load(Param("dst"), GP64()), Load(Param("src"), GP64()), Load(Param("k"), GP64())
	end := GP64()
	LEAQ(Mem{Base: src, Index: k, Scale: 1}, end)
	Label("il2")
	r0, r1 := ZMM(), ZMM()
	VMOVDQU32(mem(src, 0), r0)
	VMOVDQU32(Mem{Base: src, Index: k, Scale: 1}, r1)
	// In each 128-bit lane L: lo = words 4L, 4L+1 of both rows, hi =
	// words 4L+2, 4L+3.
	lo, hi := ZMM(), ZMM()
	VPUNPCKLDQ(r1, r0, lo)
	VPUNPCKHDQ(r1, r0, hi)
	// Output lanes in word order: lo.0 hi.0 lo.1 hi.1, then lo.2 hi.2
	// lo.3 hi.3.
	t, u := ZMM(), ZMM()
	VSHUFI32X4(U8(0x44), hi, lo, t) // lo.0 lo.1 hi.0 hi.1
	VSHUFI32X4(U8(0xEE), hi, lo, u) // lo.2 lo.3 hi.2 hi.3
	VSHUFI32X4(U8(0xD8), t, t, t)
	VSHUFI32X4(U8(0xD8), u, u, u)
	VMOVDQU32(t, mem(dst, 0))
	VMOVDQU32(u, mem(dst, 64))
	ADDQ(U32(128), dst)
	ADDQ(U32(64), src)
	CMPQ(src, end)
	JL(LabelRef("il2"))
	VZEROUPPER()
	RET()
}
