package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	"github.com/mmcloughlin/avo/ir"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// vpdpbusd emits VPDPBUSD (AVX512_VNNI), which avo's instruction table
// lacks: acc[i] += Σ_j u8(q[4i+j])·s8(a[4i+j]) for each dword lane i.
func vpdpbusd(a, q, acc Op) { vnni("VPDPBUSD", a, q, acc) }

// vnni emits an AVX512_VNNI instruction that accumulates into acc (avo
// has no constructors for them).
func vnni(opcode string, a, b, acc Op) {
	Instruction(&ir.Instruction{
		Opcode:   opcode,
		Operands: []Op{a, b, acc},
		Inputs:   []Op{a, b, acc},
		Outputs:  []Op{acc},
		ISA:      []string{"AVX512_VNNI"},
	})
}

// int4Epilogue folds one group's integer sums into the float accumulator:
//
//	facc = fma(float32(isum - z·A), s·d, facc)
//
// z and s are the block's zero points (int32 lanes) and scales (float32
// lanes), A and d the token's activation sum and step (memory, broadcast).
// Every INT4 kernel ends a group through this function.
func int4Epilogue(i isa, isum, z, s, facc VecVirtual, A, d Mem) {
	za, sd, bc := i.vec(), i.vec(), i.vec()
	VPBROADCASTD(A, bc)
	VPMULLD(bc, z, za)
	VPSUBD(za, isum, isum)
	VCVTDQ2PS(isum, isum)
	VBROADCASTSS(d, bc)
	VMULPS(bc, s, sd)
	VFMADD231PS(sd, isum, facc)
}

// int4Meta loads the zero points and scales of one block half (lanes
// outputs starting at lane0) from a 48-byte record at m.
func int4Meta(i isa, m Register, lane0 int) (z, s VecVirtual) {
	z, s = i.vec(), i.vec()
	VPMOVZXBD(mem(m, 32+lane0), z)
	VCVTPH2PS(mem(m, 2*lane0), s)
	return z, s
}

func int4Kernels() {
	int4GemmVNNI(4, []int{2, 1}, false)
	int4GemmVNNI(2, []int{4, 1}, true)
	int4GemmVNNI(1, []int{4, 1}, true)
	int4GemmOutVNNI(8, 2)
	int4GemmOutVNNI(4, 4)
	int4GemvAVX2()
	int4UnpackedKernels()
}

const int4Doc = "facc[n] = Σ_g fma(float32(Σ_k q[k][n]·a[k] − z[g][n]·asum[g]), s[g][n]·d[g], facc[n])"

// int4GemmVNNI generates the kernel for rows = 1, 2 or 4 (a token; a
// token's coarse and residual rows; two tokens' or four coarse rows): rows
// × R blocks per register tile, for R in tiles (largest first, each used
// while enough blocks remain). The rows' activations are interleaved by
// 4-byte word (word w of row t at a[4·rows·w + 4t]) and their steps and
// sums are [groups][rows]. With stream, the kernel asks for each stream's
// codes 2 KiB ahead, for calls that read them from memory; the 4-row
// kernel, without it, serves the further rows of a chunk of blocks, whose
// codes the chunk's first call (int4GemmOutVNNI) left in L2.
func int4GemmVNNI(rows int, tiles []int, stream bool) {
	if len(tiles) != 2 || tiles[1] != 1 {
		// Only the first tile height spaces its blocks (bstep below).
		panic("int4GemmVNNI: tiles must be {R, 1}")
	}
	name := fmt.Sprintf("int4Gemm%dVNNI", rows)
	TEXT(name, NOSPLIT, "func(dst *float32, ldd int, qs, meta *byte, a4 *int8, d4 *float32, asum4 *int32, groups, tiles, blocks, qstride int)")
	what := fmt.Sprintf("%d rows", rows)
	if rows == 1 {
		what = "one row"
	}
	Doc(fmt.Sprintf("%s computes blocks of 16 outputs of %s from repacked INT4", name, what),
		"weights (qs, meta) and int8 activations with per-group steps d and sums asum:",
		"",
		"\t"+int4Doc,
		"",
		"over groups g in increasing order (the integer sums are exact). Row t's",
		fmt.Sprintf("outputs are at dst[t*ldd:], its activation word w (bytes 4w..4w+3) at a4[%dw+4t:],", 4*rows),
		fmt.Sprintf("its group steps and sums at d4[%dg+t] and asum4[%dg+t]; qstride is the bytes", rows, rows),
		fmt.Sprintf("of codes per block. With q = blocks/%d, tile j < q takes blocks j, j+q, …, j+%d·q;", tiles[0], tiles[0]-1),
		"the rest go one at a time. Every output goes through the same operations whatever",
		"its tile, row count or call.")
	i := avx512
	// bstep = blocks/tiles[0]: the spacing of a tile's blocks.
	bstep := AllocLocal(8)
	{
		q := Load(Param("blocks"), GP64())
		SHRQ(U8(log2(tiles[0])), q)
		MOVQ(q, bstep)
	}
	mask := i.vec()
	VMOVDQU32(vconst("nibble", 0x0F0F0F0F), mask)
	for ri, R := range tiles {
		label := fmt.Sprintf("tile%d", R)
		next := "ret"
		if ri+1 < len(tiles) {
			next = fmt.Sprintf("tile%d", tiles[ri+1])
		}
		Label(label)
		{
			blocks := Load(Param("blocks"), GP64())
			CMPQ(blocks, U32(R))
			JL(LabelRef(label + "_end"))
		}
		qsp, mp := make([]GPVirtual, R), make([]GPVirtual, R)
		for b := range R {
			qsp[b], mp[b] = GP64(), GP64()
		}
		Load(Param("qs"), qsp[0])
		Load(Param("meta"), mp[0])
		if R > 1 {
			// A tile's blocks are bstep blocks apart, so that each of its
			// R streams of codes runs on through bstep blocks instead of
			// ending after one: short streams lost a fifth of the read
			// rate to the hardware's and the prefetches' start-up at
			// every block of the 0.6B's 8 KiB.
			qstride := Load(Param("qstride"), GP64())
			gn := Load(Param("groups"), GP64())
			mstride := GP64()
			IMUL3Q(U32(48), gn, mstride) // meta bytes per block
			IMULQ(bstep, qstride)
			IMULQ(bstep, mstride)
			for b := 1; b < R; b++ {
				LEAQ(Mem{Base: qsp[b-1], Index: qstride, Scale: 1}, qsp[b])
				LEAQ(Mem{Base: mp[b-1], Index: mstride, Scale: 1}, mp[b])
			}
		}
		facc := make([][]VecVirtual, rows)
		for t := range facc {
			facc[t] = make([]VecVirtual, R)
			for b := range R {
				facc[t][b] = i.vec()
				zero(facc[t][b])
			}
		}
		ap, dp, sp := Load(Param("a4"), GP64()), Load(Param("d4"), GP64()), Load(Param("asum4"), GP64())
		gn := Load(Param("groups"), GP64())
		Label(label + "_group")
		iacc := int4ZeroSums(i, rows, R)
		tn := Load(Param("tiles"), GP64())
		Label(label + "_tile")
		lo, hi := int4Codes(i, qsp, mask, stream)
		for t := range rows {
			alo, ahi := i.vec(), i.vec()
			VPBROADCASTD(mem(ap, 4*t), alo)
			VPBROADCASTD(mem(ap, 4*rows+4*t), ahi)
			for b := range R {
				vpdpbusd(alo, lo[b], iacc[t][b])
				vpdpbusd(ahi, hi[b], iacc[t][b])
			}
		}
		for b := range R {
			ADDQ(U32(64), qsp[b])
		}
		ADDQ(U32(8*rows), ap)
		DECQ(tn)
		JNZ(LabelRef(label + "_tile"))
		for b := range R {
			z, s := int4Meta(i, mp[b], 0)
			for t := range rows {
				int4Epilogue(i, iacc[t][b], z, s, facc[t][b], mem(sp, 4*t), mem(dp, 4*t))
			}
			ADDQ(U32(48), mp[b])
		}
		ADDQ(U32(4*rows), dp)
		ADDQ(U32(4*rows), sp)
		DECQ(gn)
		JNZ(LabelRef(label + "_group"))
		// Store, then advance the frame's block pointers: past this
		// tile's first block (the next tile's) when its blocks are
		// bstep apart, past all of it when one at a time.
		dst, ldd := Load(Param("dst"), GP64()), Load(Param("ldd"), GP64())
		SHLQ(U8(2), ldd)
		var dstep Register
		if R > 1 {
			dstep = GP64()
			MOVQ(bstep, dstep)
			SHLQ(U8(6), dstep) // 16 floats a block
		}
		for t := range rows {
			p := dst
			if R > 1 && t < rows-1 {
				p = GP64()
				MOVQ(dst, p)
			}
			for b := range R {
				VMOVUPS(facc[t][b], mem(p, 0))
				if b < R-1 {
					ADDQ(dstep, p)
				}
			}
			if t < rows-1 {
				ADDQ(ldd, dst)
			}
		}
		int4TileEnd(label, next, qsp[0], mp[0], bstep, R)
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

// int4ZeroSums allocates and zeroes the integer sums of a tile of rows ×
// R blocks, one group's worth.
func int4ZeroSums(i isa, rows, R int) [][]VecVirtual {
	iacc := make([][]VecVirtual, rows)
	for t := range iacc {
		iacc[t] = make([]VecVirtual, R)
		for b := range R {
			iacc[t][b] = i.vec()
			VPXORD(iacc[t][b], iacc[t][b], iacc[t][b])
		}
	}
	return iacc
}

// int4Codes loads one 64-byte step of codes from each stream of a tile
// (qsp) and splits it into low and high nibbles; with stream, it first asks
// for the stream's codes 2 KiB ahead (calls that read them from memory).
func int4Codes(i isa, qsp []GPVirtual, mask VecVirtual, stream bool) (lo, hi []VecVirtual) {
	lo, hi = make([]VecVirtual, len(qsp)), make([]VecVirtual, len(qsp))
	for b, q := range qsp {
		if stream {
			PREFETCHT0(mem(q, 2048))
		}
		lo[b], hi[b] = i.vec(), i.vec()
		VMOVDQU32(mem(q, 0), lo[b])
		VPSRLW(U8(4), lo[b], hi[b])
		VPANDD(mask, lo[b], lo[b])
		VPANDD(mask, hi[b], hi[b])
	}
	return lo, hi
}

// int4TileEnd closes the loop over tiles of R blocks labelled label: the
// frame moves past the finished tile (int4TileDone) and the loop repeats;
// once too few blocks are left, after spaced tiles (R > 1) the frame
// skips the blocks they took (int4SkipSpaced), and control goes to next.
func int4TileEnd(label, next string, qs, meta Register, bstep Mem, R int) {
	int4TileDone(qs, meta, R)
	JMP(LabelRef(label))
	Label(label + "_end")
	if R > 1 {
		int4SkipSpaced(bstep, R)
	}
	JMP(LabelRef(next))
}

// int4TileDone moves the frame past a finished tile of R blocks: dst to the
// next block's outputs, qs and meta to where the tile's first stream
// stopped (its next block), blocks down by R.
func int4TileDone(qs, meta Register, R int) {
	d := Load(Param("dst"), GP64())
	ADDQ(U32(64), d)
	Store(d, Param("dst"))
	Store(qs, Param("qs"))
	Store(meta, Param("meta"))
	blocks := Load(Param("blocks"), GP64())
	SUBQ(U32(R), blocks)
	Store(blocks, Param("blocks"))
}

// int4SkipSpaced runs after the tiles whose R blocks were bstep apart: they
// took blocks [0, R·bstep) and left the frame's pointers at block bstep,
// which this moves to block R·bstep.
func int4SkipSpaced(bstep Mem, R int) {
	skip := GP64()
	MOVQ(bstep, skip)
	IMUL3Q(U32(R-1), skip, skip) // blocks to skip
	qs, ms, d := Load(Param("qstride"), GP64()), Load(Param("groups"), GP64()), GP64()
	IMUL3Q(U32(48), ms, ms)
	MOVQ(skip, d)
	SHLQ(U8(6), d)
	IMULQ(skip, qs)
	IMULQ(skip, ms)
	for _, f := range []struct {
		param string
		by    Register
	}{{"qs", qs}, {"meta", ms}, {"dst", d}} {
		p := Load(Param(f.param), GP64())
		ADDQ(f.by, p)
		Store(p, Param(f.param))
	}
}

// int4GemvAVX2 is int4Gemm1VNNI with VPMADDUBSW+VPMADDWD in place of
// VPDPBUSD, on two 8-output halves of each block; the integer sums and the
// float steps are the same, so the results are too.
func int4GemvAVX2() {
	TEXT("int4GemvAVX2", NOSPLIT, "func(dst *float32, qs, meta *byte, a *int8, d *float32, asum *int32, groups, tiles, blocks int)")
	Doc("int4GemvAVX2 is int4Gemm1VNNI for AVX2, one block at a time:",
		"",
		"\t"+int4Doc)
	i := avx2
	dst, qs, meta := Load(Param("dst"), GP64()), Load(Param("qs"), GP64()), Load(Param("meta"), GP64())
	blocks := Load(Param("blocks"), GP64())
	mask, ones := i.vec(), i.vec()
	VMOVDQU(vconst("nibble", 0x0F0F0F0F), mask)
	VMOVDQU(vconst("ones16", 0x00010001), ones)
	Label("block")
	facc := []VecVirtual{i.vec(), i.vec()}
	zero(facc[0])
	zero(facc[1])
	ap, dp, sp := Load(Param("a"), GP64()), Load(Param("d"), GP64()), Load(Param("asum"), GP64())
	gn := Load(Param("groups"), GP64())
	Label("group")
	iacc := []VecVirtual{i.vec(), i.vec()}
	VPXOR(iacc[0], iacc[0], iacc[0])
	VPXOR(iacc[1], iacc[1], iacc[1])
	tn := Load(Param("tiles"), GP64())
	Label("tile")
	alo, ahi := i.vec(), i.vec()
	VPBROADCASTD(mem(ap, 0), alo)
	VPBROADCASTD(mem(ap, 4), ahi)
	for h := range 2 {
		v, hi := i.vec(), i.vec()
		VMOVDQU(mem(qs, 32*h), v)
		VPSRLW(U8(4), v, hi)
		VPAND(mask, v, v)
		VPAND(mask, hi, hi)
		VPMADDUBSW(alo, v, v) // u8 codes × s8 activations, pairs to int16
		VPMADDUBSW(ahi, hi, hi)
		VPADDW(hi, v, v) // |lo+hi pair sums| <= 4·15·127, no overflow
		VPMADDWD(ones, v, v)
		VPADDD(v, iacc[h], iacc[h])
	}
	ADDQ(U32(64), qs)
	ADDQ(U32(8), ap)
	DECQ(tn)
	JNZ(LabelRef("tile"))
	for h := range 2 {
		z, s := int4Meta(i, meta, 8*h)
		int4Epilogue(i, iacc[h], z, s, facc[h], mem(sp, 0), mem(dp, 0))
	}
	ADDQ(U32(48), meta)
	ADDQ(U32(4), dp)
	ADDQ(U32(4), sp)
	DECQ(gn)
	JNZ(LabelRef("group"))
	VMOVUPS(facc[0], mem(dst, 0))
	VMOVUPS(facc[1], mem(dst, 32))
	ADDQ(U32(64), dst)
	DECQ(blocks)
	JNZ(LabelRef("block"))
	VZEROUPPER()
	RET()
}

// int4GemmOutVNNI is int4GemmVNNI with the float sums kept in dst, zeroed
// first, instead of registers, so that a tile's integer sums can fill the
// registers: rows = 8 (two 4-row activation blocks, the second 4K bytes
// and 4·groups steps after the first) with tiles of 2 blocks, each 64-byte
// code load then serving 16 multiplies and the codes read once for all
// 8 rows where two 4-row calls read them twice; or rows = 4 with tiles of
// 4 blocks, four streams of codes a core where int4Gemm4VNNI's register
// tiles have room for two. Tiles take blocks blocks/R0 apart, then single
// blocks; the codes are prefetched 2 KiB ahead (the calls read them from
// memory). The float steps are the register kernels', in their order:
// the outputs are bitwise theirs.
func int4GemmOutVNNI(rows, R0 int) {
	name := fmt.Sprintf("int4Gemm%dx%dVNNI", rows, R0)
	TEXT(name, NOSPLIT, "func(dst *float32, ldd int, qs, meta *byte, a4 *int8, d4 *float32, asum4 *int32, groups, tiles, blocks, qstride int)")
	doc := []string{
		fmt.Sprintf("%s computes blocks of 16 outputs of %d rows from repacked INT4 weights", name, rows),
		"(qs, meta) and int8 activations with per-group steps d and sums asum:",
		"",
		"\t" + int4Doc,
		"",
		"over groups g in increasing order (the integer sums are exact), the float sums",
		"accumulated in dst.",
	}
	if rows == 8 {
		doc = append(doc, "Rows 0–3 and 4–7 are two 4-row blocks as int4Gemm4VNNI reads them, the",
			"second at a4[4K:], d4[4·groups:] and asum4[4·groups:] (K = 8·tiles·groups).")
	}
	doc = append(doc, fmt.Sprintf("With q = blocks/%d, tile j < q takes blocks j, j+q, …, j+%d·q; the rest go", R0, R0-1),
		"one at a time. Every output goes through the same operations as in int4Gemm4VNNI.")
	Doc(doc...)
	i := avx512
	bstep := AllocLocal(8) // blocks/R0: the spacing of a tile's blocks
	{
		q := Load(Param("blocks"), GP64())
		SHRQ(U8(log2(R0)), q)
		MOVQ(q, bstep)
	}
	// out addresses output block b of the row at p: p + b·dstep, with
	// dstep = bstep·64 bytes and tmp a scratch register.
	out := func(p, dstep, tmp Register, b int) Mem {
		switch b {
		case 0:
			return mem(p, 0)
		case 1, 2:
			return Mem{Base: p, Index: dstep, Scale: uint8(b)}
		default:
			LEAQ(Mem{Base: p, Index: dstep, Scale: 2}, tmp)
			return Mem{Base: tmp, Index: dstep, Scale: 1}
		}
	}
	mask := i.vec()
	VMOVDQU32(vconst("nibble", 0x0F0F0F0F), mask)
	for ri, R := range []int{R0, 1} {
		label := fmt.Sprintf("tile%d", R)
		next := "ret"
		if ri == 0 {
			next = "tile1"
		}
		Label(label)
		{
			blocks := Load(Param("blocks"), GP64())
			CMPQ(blocks, U32(R))
			JL(LabelRef(label + "_end"))
		}
		// Zero the tile's outputs: the float sums accumulate there.
		{
			z := i.vec()
			zero(z)
			p, ldd := Load(Param("dst"), GP64()), Load(Param("ldd"), GP64())
			SHLQ(U8(2), ldd)
			dstep, tmp := GP64(), GP64()
			MOVQ(bstep, dstep)
			SHLQ(U8(6), dstep)
			for range rows {
				for b := range R {
					VMOVUPS(z, out(p, dstep, tmp, b))
				}
				ADDQ(ldd, p)
			}
		}
		qsp := make([]GPVirtual, R)
		for b := range R {
			qsp[b] = GP64()
		}
		Load(Param("qs"), qsp[0])
		if R > 1 {
			qstride := Load(Param("qstride"), GP64())
			IMULQ(bstep, qstride)
			for b := 1; b < R; b++ {
				LEAQ(Mem{Base: qsp[b-1], Index: qstride, Scale: 1}, qsp[b])
			}
		}
		mp := Load(Param("meta"), GP64())
		var aoff GPVirtual
		if rows == 8 {
			// aoff: bytes from the first activation block to the
			// second (4K = 32·tiles·groups).
			aoff = GP64()
			t := Load(Param("tiles"), GP64())
			Load(Param("groups"), aoff)
			IMULQ(t, aoff)
			SHLQ(U8(5), aoff)
		}
		ap, dp, sp := Load(Param("a4"), GP64()), Load(Param("d4"), GP64()), Load(Param("asum4"), GP64())
		gn := Load(Param("groups"), GP64())
		Label(label + "_group")
		iacc := int4ZeroSums(i, rows, R)
		tn := Load(Param("tiles"), GP64())
		Label(label + "_tile")
		lo, hi := int4Codes(i, qsp, mask, true)
		for t := range rows {
			alo, ahi := i.vec(), i.vec()
			m := func(disp int) Mem {
				if t < 4 {
					return mem(ap, disp)
				}
				return Mem{Base: ap, Index: aoff, Scale: 1, Disp: disp}
			}
			VPBROADCASTD(m(4*(t%4)), alo)
			VPBROADCASTD(m(16+4*(t%4)), ahi)
			for b := range R {
				vpdpbusd(alo, lo[b], iacc[t][b])
				vpdpbusd(ahi, hi[b], iacc[t][b])
			}
		}
		for b := range R {
			ADDQ(U32(64), qsp[b])
		}
		ADDQ(U32(32), ap)
		DECQ(tn)
		JNZ(LabelRef(label + "_tile"))
		{
			// Block b's record is mstride = bstep·groups·48 bytes after
			// block b-1's.
			zs, ss := make([]VecVirtual, R), make([]VecVirtual, R)
			ma := GP64()
			MOVQ(mp, ma)
			if R > 1 {
				mstride := Load(Param("groups"), GP64())
				IMUL3Q(U32(48), mstride, mstride)
				IMULQ(bstep, mstride)
				for b := range R {
					if b > 0 {
						ADDQ(mstride, ma)
					}
					zs[b], ss[b] = int4Meta(i, ma, 0)
				}
			} else {
				zs[0], ss[0] = int4Meta(i, ma, 0)
			}
			ADDQ(U32(48), mp)
			var goff GPVirtual
			if rows == 8 {
				// goff: bytes from the first block's steps (and sums)
				// to the second's (16·groups).
				goff = GP64()
				Load(Param("groups"), goff)
				SHLQ(U8(4), goff)
			}
			p, ldd := Load(Param("dst"), GP64()), Load(Param("ldd"), GP64())
			SHLQ(U8(2), ldd)
			dstep, tmp := GP64(), GP64()
			MOVQ(bstep, dstep)
			SHLQ(U8(6), dstep)
			for t := range rows {
				g := func(base Register) Mem {
					if t < 4 {
						return mem(base, 4*(t%4))
					}
					return Mem{Base: base, Index: goff, Scale: 1, Disp: 4 * (t % 4)}
				}
				for b := range R {
					o := out(p, dstep, tmp, b)
					facc := i.vec()
					VMOVUPS(o, facc)
					int4Epilogue(i, iacc[t][b], zs[b], ss[b], facc, g(sp), g(dp))
					VMOVUPS(facc, o)
				}
				ADDQ(ldd, p)
			}
		}
		ADDQ(U32(16), dp)
		ADDQ(U32(16), sp)
		DECQ(gn)
		JNZ(LabelRef(label + "_group"))
		int4TileEnd(label, next, qsp[0], mp, bstep, R)
	}
	Label("ret")
	VZEROUPPER()
	RET()
}
