package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// attentionBlock emits the AVX-512 kernels of AttendBlock: scores and
// weighted sums of four queries at once, so every key and value loaded
// serves four queries. Each element goes through exactly the operations
// of attnScoresAVX512 and attnSumAVX512, which is what keeps a query's
// output independent of the queries it was blocked with.
func attentionBlock(kt kvType) {
	attnScoresQ4(kt)
	attnSumQ4(kt, false)
	attnSumQ4(kt, true)
}

// blockScoresParams declares the multi-query score kernel of Q queries
// and tiles of K keys and loads its parameters: the scale broadcast, and
// d, stride and sstride turned into bytes.
func blockScoresParams(kt kvType, Q, K int) (sc VecVirtual, s, q, k, n, d, stride, ss Register) {
	name := fmt.Sprintf("attnScoresQ%d%sAVX512", Q, kt.name)
	TEXT(name, NOSPLIT, "func(s *float32, sstride int, q *float32, k *"+kt.gotyp+", n, d, stride int, scale float32)")
	Doc(name+" sets s[i*sstride+j] = scale·(q[i*d:][:d]·k[j*stride:][:d])",
		fmt.Sprintf("for queries i < %d and keys j < n, n a multiple of %d and d of 16; each score", Q, K),
		"is bitwise the one attnScores"+kt.name+"AVX512 computes.")
	sc = ZMM()
	VBROADCASTSS(Load(Param("scale"), XMM()), sc)
	s, q, k = Load(Param("s"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
	n, d, stride = Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	ss = Load(Param("sstride"), GP64())
	SHLQ(U8(2), d)
	kt.bytes(stride)
	SHLQ(U8(2), ss)
	return
}

// attnScoresQ4: 4 queries × 4 keys per register tile, one accumulator per
// score; the 16 accumulators are then reduced together by a transposing
// tree that adds the same lane pairs as isa.reduce, in the same order.
func attnScoresQ4(kt kvType) {
	i := avx512
	sc, s, q, k, n, d, stride, ss := blockScoresParams(kt, 4, 4)
	triple := func(x Register) Register {
		t := GP64()
		LEAQ(Mem{Base: x, Index: x, Scale: 2}, t)
		return t
	}
	d3, stride3, ss3 := triple(d), triple(stride), triple(ss)
	TESTQ(n, n)
	JZ(LabelRef("q4_ret"))
	Label("q4_keys")
	// acc[4·key + query]
	acc := make([]VecVirtual, 16)
	for a := range acc {
		acc[a] = i.vec()
		zero(acc[a])
	}
	qo, ko, qend := GP64(), GP64(), GP64()
	MOVQ(q, qo)
	MOVQ(k, ko)
	LEAQ(Mem{Base: q, Index: d, Scale: 1}, qend)
	Label("q4_dims")
	qv := make([]VecVirtual, 4)
	for r := range qv {
		qv[r] = i.vec()
		VMOVUPS(row4(qo, d, d3, r, 0), qv[r])
	}
	for kj := range 4 {
		t := i.vec()
		kt.load(i, row4(ko, stride, stride3, kj, 0), t)
		for qi := range 4 {
			VFMADD231PS(qv[qi], t, acc[4*kj+qi])
		}
	}
	ADDQ(U32(64), qo)
	ADDQ(U32(16*kt.size), ko)
	CMPQ(qo, qend)
	JL(LabelRef("q4_dims"))
	w := transposeReduce16(acc)
	VMULPS(sc, w, w)
	// 128-bit lane qi of w holds query qi's scores for the 4 keys.
	VMOVUPS(w.AsX(), mem(s, 0))
	for qi := 1; qi < 4; qi++ {
		VEXTRACTF32X4(U8(qi), w, row4(s, ss, ss3, qi, 0))
	}
	ADDQ(U8(16), s)
	LEAQ(Mem{Base: k, Index: stride, Scale: 4}, k)
	SUBQ(U8(4), n)
	JNZ(LabelRef("q4_keys"))
	Label("q4_ret")
	VZEROUPPER()
	RET()
}

// attnScoresQ2: 2 queries × 8 keys per register tile (decode with two
// query heads per KV head): each key is loaded and widened once for both
// queries, and the 16 accumulators are reduced together as in
// attnScoresQ4.
func attnScoresQ2(kt kvType) {
	i := avx512
	sc, s, q, k, n, d, stride, ss := blockScoresParams(kt, 2, 8)
	stride3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)
	TESTQ(n, n)
	JZ(LabelRef("q2_ret"))
	Label("q2_keys")
	// Query qi and key kj accumulate in acc[4·(kj%4) + 2·qi + kj/4],
	// which the transposing tree delivers to lane 8·qi + kj.
	acc := make([]VecVirtual, 16)
	for a := range acc {
		acc[a] = i.vec()
		zero(acc[a])
	}
	qo, qend := GP64(), GP64()
	kb := []Register{GP64(), GP64()}
	MOVQ(q, qo)
	MOVQ(k, kb[0])
	LEAQ(Mem{Base: k, Index: stride, Scale: 4}, kb[1])
	LEAQ(Mem{Base: q, Index: d, Scale: 1}, qend)
	Label("q2_dims")
	qv := []VecVirtual{i.vec(), i.vec()}
	VMOVUPS(mem(qo, 0), qv[0])
	VMOVUPS(Mem{Base: qo, Index: d, Scale: 1}, qv[1])
	for kj := range 8 {
		if bf16Prefetch > 0 {
			PREFETCHT0(row4(kb[kj/4], stride, stride3, kj%4, bf16Prefetch))
		}
		t := i.vec()
		kt.load(i, row4(kb[kj/4], stride, stride3, kj%4, 0), t)
		for qi := range 2 {
			VFMADD231PS(qv[qi], t, acc[4*(kj%4)+2*qi+kj/4])
		}
	}
	ADDQ(U32(64), qo)
	ADDQ(U32(16*kt.size), kb[0])
	ADDQ(U32(16*kt.size), kb[1])
	CMPQ(qo, qend)
	JL(LabelRef("q2_dims"))
	w := transposeReduce16(acc)
	VMULPS(sc, w, w)
	VMOVUPS(w.AsY(), mem(s, 0))
	VEXTRACTF64X4(U8(1), w, Mem{Base: s, Index: ss, Scale: 1})
	ADDQ(U8(32), s)
	LEAQ(Mem{Base: k, Index: stride, Scale: 8}, k)
	SUBQ(U8(8), n)
	JNZ(LabelRef("q2_keys"))
	Label("q2_ret")
	VZEROUPPER()
	RET()
}

// transposeReduce16 sums the 16 lanes of each of 16 vectors A[m] into one
// vector whose lane 4(m%4) + m/4 holds the sum of A[m]. Each level adds
// the lane pairs isa.reduce adds (l and l+8, then l+4, l+2, l+1), so each
// sum is bitwise the one reduce returns.
func transposeReduce16(a []VecVirtual) VecVirtual {
	return transposeTree16(a, func(x, y, dst VecVirtual) { VADDPS(x, y, dst) })
}

// transposeTree16 is transposeReduce16 with another addition: VPADDD
// reduces sixteen vectors of int32 sums the same way.
func transposeTree16(a []VecVirtual, add func(x, y, dst VecVirtual)) VecVirtual {
	pairs := func(in []VecVirtual, shuf func(x, y, lo, hi VecVirtual)) []VecVirtual {
		out := make([]VecVirtual, len(in)/2)
		for m := range out {
			lo, hi := ZMM(), ZMM()
			shuf(in[2*m], in[2*m+1], lo, hi)
			add(hi, lo, lo)
			out[m] = lo
		}
		return out
	}
	// Level 1: 256-bit halves: [X.lo, Y.lo] + [X.hi, Y.hi].
	p := pairs(a, func(x, y, lo, hi VecVirtual) {
		VSHUFF32X4(U8(0x44), y, x, lo)
		VSHUFF32X4(U8(0xEE), y, x, hi)
	})
	// Level 2: 128-bit lanes within each half: [P0, P2, Q0, Q2] + [P1, P3, Q1, Q3].
	r := pairs(p, func(x, y, lo, hi VecVirtual) {
		VSHUFF32X4(U8(0x88), y, x, lo)
		VSHUFF32X4(U8(0xDD), y, x, hi)
	})
	// Level 3, in each 128-bit lane: [x0, x1, y0, y1] + [x2, x3, y2, y3].
	u := pairs(r, func(x, y, lo, hi VecVirtual) {
		VSHUFPS(U8(0x44), y, x, lo)
		VSHUFPS(U8(0xEE), y, x, hi)
	})
	// Level 4: [x0, x2, y0, y2] + [x1, x3, y1, y3].
	w := pairs(u, func(x, y, lo, hi VecVirtual) {
		VSHUFPS(U8(0x88), y, x, lo)
		VSHUFPS(U8(0xDD), y, x, hi)
	})
	return w[0]
}

// attnSumQ4 emits the weighted sums of 4 queries over 64 output dims at a
// time: each value vector loaded is used by the 4 queries.
func attnSumQ4(kt kvType, add bool) { attnSumQ(kt, add, 4) }

// attnSumQ emits the weighted sums of Q (2 or 4) queries over 256/Q output
// dims at a time (sixteen accumulators): each value vector loaded and
// widened is used by the Q queries.
func attnSumQ(kt kvType, add bool, Q int) {
	i := avx512
	U := 16 / Q // vectors per query per chunk
	dims := 16 * U
	q := fmt.Sprint(Q)
	name, verb := "attnSumQ"+q+kt.name+"AVX512", "sets"
	if add {
		name, verb = "attnSumAddQ"+q+kt.name+"AVX512", "adds to"
	}
	TEXT(name, NOSPLIT, "func(out, p *float32, pstride int, v *"+kt.gotyp+", n, d, stride int)")
	Doc(name+" "+verb+" out[i*d:][:d] Σ_j p[i*pstride+j]·v[j*stride:][:d] for queries",
		"i < "+q+", over j < n in increasing j, d a multiple of "+fmt.Sprint(dims)+", n > 0; each element",
		"is bitwise the one attnSum"+map[bool]string{false: "", true: "Add"}[add]+kt.name+"AVX512 computes.")
	out, v := Load(Param("out"), GP64()), Load(Param("v"), GP64())
	d, stride, ps := Load(Param("d"), GP64()), Load(Param("stride"), GP64()), Load(Param("pstride"), GP64())
	kt.bytes(stride)
	SHLQ(U8(2), ps)
	db, db3, ps3 := GP64(), GP64(), GP64()
	MOVQ(d, db)
	SHLQ(U8(2), db) // bytes per query row of out
	LEAQ(Mem{Base: db, Index: db, Scale: 2}, db3)
	LEAQ(Mem{Base: ps, Index: ps, Scale: 2}, ps3)
	Label(name + "_chunk")
	acc := make([][]VecVirtual, Q)
	for qi := range acc {
		acc[qi] = make([]VecVirtual, U)
		for u := range acc[qi] {
			acc[qi][u] = i.vec()
			if add {
				VMOVUPS(row4(out, db, db3, qi, 64*u), acc[qi][u])
			} else {
				zero(acc[qi][u])
			}
		}
	}
	pj, nj, vp := Load(Param("p"), GP64()), Load(Param("n"), GP64()), GP64()
	MOVQ(v, vp)
	Label(name + "_j")
	// Decode (Q = 2) streams a cache from memory; the four-query sums of
	// prefill reread L1-sized chunks and are left as they were.
	if pf := map[int]int{1: i8Prefetch, 2: bf16Prefetch}[kt.size]; pf > 0 && Q == 2 {
		for l := 0; l < 16*kt.size*U; l += 64 {
			PREFETCHT0(mem(vp, pf+l))
		}
	}
	vv := make([]VecVirtual, U)
	for u := range vv {
		vv[u] = i.vec()
		kt.load(i, mem(vp, 16*kt.size*u), vv[u])
	}
	for qi := range Q {
		b := i.vec()
		VBROADCASTSS(row4(pj, ps, ps3, qi, 0), b)
		for u := range U {
			VFMADD231PS(vv[u], b, acc[qi][u])
		}
	}
	ADDQ(stride, vp)
	ADDQ(U8(4), pj)
	DECQ(nj)
	JNZ(LabelRef(name + "_j"))
	for qi := range Q {
		for u := range U {
			VMOVUPS(acc[qi][u], row4(out, db, db3, qi, 64*u))
		}
	}
	ADDQ(U32(4*dims), out)
	ADDQ(U32(dims*kt.size), v)
	SUBQ(U32(dims), d)
	JNZ(LabelRef(name + "_chunk"))
	VZEROUPPER()
	RET()
}
