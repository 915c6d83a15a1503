package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// readSum emits readSumAVX512: the memory-read probe behind
// kernels.ReadSum. A scalar Go loop is limited by the core's add
// throughput on slow or shared cores, so it would measure the CPU, not the
// memory; 512-bit loads into four independent accumulators leave the
// memory system as the only limit. It reads the four quarters of its
// range side by side, each prefetched 2 KiB ahead: a core keeps more
// lines in flight over four streams than over one, and on the machine
// this was tuned on one stream per core reached only about 0.8 of four
// (and of what the decode products, which read four streams per core,
// then sustained).
func readSum() {
	TEXT("readSumAVX512", NOSPLIT, "func(p *uint64, n int) uint64")
	Doc("readSumAVX512 returns the wrapping sum of p[:n] (n a multiple of 32),",
		"read as four streams side by side (its quarters): one 64-byte load from",
		"each per step, each stream into its own accumulator.")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	acc := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	for _, v := range acc {
		VPXORQ(v, v, v)
	}
	// q = the bytes of a quarter (2n); the quarters start at p, p+q,
	// p+2q, p+3q; end = p + q, where the first stream stops.
	q, q3, end := GP64(), GP64(), GP64()
	LEAQ(Mem{Base: n, Index: n, Scale: 1}, q)
	LEAQ(Mem{Base: q, Index: q, Scale: 2}, q3)
	LEAQ(Mem{Base: p, Index: q, Scale: 1}, end)
	Label("loop")
	CMPQ(p, end)
	JAE(LabelRef("done"))
	quarter := []Mem{
		{Base: p},
		{Base: p, Index: q, Scale: 1},
		{Base: p, Index: q, Scale: 2},
		{Base: p, Index: q3, Scale: 1},
	}
	for u, m := range quarter {
		pf := m
		pf.Disp = 2048
		PREFETCHT0(pf)
		VPADDQ(m, acc[u], acc[u])
	}
	ADDQ(U32(64), p)
	JMP(LabelRef("loop"))
	Label("done")
	// Fold the four accumulators, then the eight lanes.
	VPADDQ(acc[1], acc[0], acc[0])
	VPADDQ(acc[3], acc[2], acc[2])
	VPADDQ(acc[2], acc[0], acc[0])
	y := YMM()
	VEXTRACTI64X4(U8(1), acc[0], y)
	VPADDQ(y, acc[0].AsY(), y)
	x := XMM()
	VEXTRACTI128(U8(1), y, x)
	VPADDQ(x, y.AsX(), x)
	t := XMM()
	VPSHUFD(U8(0x4e), x, t) // swap the two quadwords
	VPADDQ(t, x, x)
	r := GP64()
	VMOVQ(x, r)
	VZEROUPPER()
	Store(r, ReturnIndex(0))
	RET()
}
