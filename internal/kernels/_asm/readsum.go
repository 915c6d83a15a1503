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
// memory system as the only limit.
func readSum() {
	TEXT("readSumAVX512", NOSPLIT, "func(p *uint64, n int) uint64")
	Doc("readSumAVX512 returns the wrapping sum of p[:n] (n a multiple of 32),",
		"read with one 64-byte load per 8 words into four accumulators.")
	p, n := Load(Param("p"), GP64()), Load(Param("n"), GP64())
	acc := []VecVirtual{ZMM(), ZMM(), ZMM(), ZMM()}
	for _, v := range acc {
		VPXORQ(v, v, v)
	}
	// end = p + 8n bytes; each iteration consumes 4 × 64 bytes.
	end := GP64()
	LEAQ(Mem{Base: p, Index: n, Scale: 8}, end)
	Label("loop")
	CMPQ(p, end)
	JAE(LabelRef("done"))
	for u, v := range acc {
		VPADDQ(Mem{Base: p, Disp: 64 * u}, v, v)
	}
	ADDQ(U32(256), p)
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
