package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// attnDotI8 emits the integer score kernels of attention over an int8
// cache (attend_i8.go): the query is int8 codes like the keys, and each
// score is an exact integer dot product scaled once. Integer sums do not
// depend on their order, so the kernels may block and reduce as suits
// them and still agree bitwise with the pure-Go loop.
func attnDotI8() {
	attnDotVNNI(false)
	attnDotI8AVX2()
}

// i8Prefetch and bf16Prefetch are i4Prefetch for the int8 and bfloat16
// kernels (int8 scores and the sums of both; the two-query bfloat16
// scores), measured the same way: 4096 made the step's attention at
// position 4,000 5-10% faster for int8 and bf16 than none.
var i8Prefetch, bf16Prefetch = 4096, 4096

const i8DotSig = "func(s *float32, q *int8, k *int8, n, d, stride int, mult float32, bias int32)"

// attnDotVNNI emits attnDotI8VNNI and attnDotI4VNNI: sixteen keys at a
// time, one VPDPBUSD per 64 code pairs per key (two for 4-bit codes: the
// low nibbles meet query codes [o, o+64), the high ones [d/2+o, d/2+o+64)).
// VPDPBUSD multiplies unsigned by signed bytes, so the keys' codes are
// offset to unsigned as they are loaded (vnniCodes) and bias = offset·Σq
// takes the offset back out of every sum. The sixteen sums are reduced
// together by transposeTree16 and converted, scaled and stored as one
// vector.
func attnDotVNNI(i4 bool) {
	name, sig, pf := "attnDotI8VNNI", i8DotSig, i8Prefetch
	doc := []string{name + " sets s[j] = mult·float32(Σ_i q[i]·k[j*stride+i]) for j < n, d a",
		"positive multiple of 64 and bias = 128·Σ_i q[i] (AVX512_VNNI)."}
	if i4 {
		name, sig, pf = "attnDotI4VNNI", i4DotSig, i4Prefetch
		doc = []string{name + " sets s[j] = mult·float32(Σ_i q[i]·c_j,i) for j < n, c_j the 4-bit codes at",
			"k[j*stride:][:d/2], d a positive multiple of 128 and bias = 8·Σ_i q[i] (AVX512_VNNI)."}
	}
	TEXT(name, NOSPLIT, sig)
	Doc(doc...)
	mult, bias := ZMM(), ZMM()
	VBROADCASTSS(Load(Param("mult"), XMM()), mult)
	b := XMM()
	VMOVD(Load(Param("bias"), GP32()), b)
	VPBROADCASTD(b, bias)
	s, q, k := Load(Param("s"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
	n, d, stride := Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	c := newVNNICodes(i4, d)
	qend := GP64()
	LEAQ(Mem{Base: q, Index: c.kbytes, Scale: 1}, qend)
	stride3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)

	Label("k16")
	CMPQ(n, U8(16))
	JL(LabelRef("k1"))
	{
		// Key kk accumulates in acc[4·(kk%4) + kk/4], which the
		// transposing tree delivers to lane kk.
		acc := make([]VecVirtual, 16)
		for a := range acc {
			acc[a] = ZMM()
			VPXORD(acc[a], acc[a], acc[a])
		}
		kb := []Register{GP64(), GP64(), GP64(), GP64()}
		MOVQ(k, kb[0])
		for g := 1; g < 4; g++ {
			LEAQ(Mem{Base: kb[g-1], Index: stride, Scale: 4}, kb[g])
		}
		qo := GP64()
		MOVQ(q, qo)
		Label("k16_d")
		qv := c.queries(qo)
		for kk := range 16 {
			if pf > 0 {
				PREFETCHT0(row4(kb[kk/4], stride, stride3, kk%4, pf))
			}
			for u, t := range c.key(row4(kb[kk/4], stride, stride3, kk%4, 0)) {
				vpdpbusd(qv[u], t, acc[4*(kk%4)+kk/4])
			}
		}
		ADDQ(U8(64), qo)
		for _, r := range kb {
			ADDQ(U8(64), r)
		}
		CMPQ(qo, qend)
		JL(LabelRef("k16_d"))
		VMOVUPS(intScores16(acc, bias, mult), mem(s, 0))
		ADDQ(U8(64), s)
		LEAQ(Mem{Base: k, Index: stride, Scale: 8}, k)
		LEAQ(Mem{Base: k, Index: stride, Scale: 8}, k)
		SUBQ(U8(16), n)
		JMP(LabelRef("k16"))
	}

	oneKeyScores(s, q, k, n, stride, qend, bias, mult, func(qo, ko Register, acc VecVirtual) {
		kv := c.key(mem(ko, 0))
		for u, qx := range c.queries(qo) {
			vpdpbusd(qx, kv[u], acc)
		}
	})
}

// vnniCodes is how a VNNI score kernel reads its keys: int8 codes, offset
// to unsigned by XOR 0x80 (bias 128·Σq), or 4-bit codes, both nibbles
// offset by one XOR 0x88 and split (bias 8·Σq), whose low and high halves
// meet query codes kbytes = d/2 apart.
type vnniCodes struct {
	i4        bool
	flip, low VecVirtual
	kbytes    Register // bytes per key
}

func newVNNICodes(i4 bool, d Register) *vnniCodes {
	c := &vnniCodes{i4: i4, kbytes: GP64()}
	MOVQ(d, c.kbytes)
	if i4 {
		SHRQ(U8(1), c.kbytes)
		c.flip, c.low = broadcastBytes(avx512, 0x88), broadcastBytes(avx512, 0x0F)
	} else {
		c.flip = broadcastBytes(avx512, 0x80)
	}
	return c
}

// key turns the 64 bytes of a key at m into the vectors that meet the
// query codes queries gives, in the same order.
func (c *vnniCodes) key(m Mem) []VecVirtual {
	if c.i4 {
		lo, hi := unpackI4(m, c.flip, c.low, true)
		return []VecVirtual{lo, hi}
	}
	t := ZMM()
	VPXORD(m, c.flip, t)
	return []VecVirtual{t}
}

// queries loads the query codes at qo that meet a key block.
func (c *vnniCodes) queries(qo Register) []VecVirtual {
	ql := ZMM()
	VMOVDQU64(mem(qo, 0), ql)
	if !c.i4 {
		return []VecVirtual{ql}
	}
	qh := ZMM()
	VMOVDQU64(Mem{Base: qo, Index: c.kbytes, Scale: 1}, qh)
	return []VecVirtual{ql, qh}
}

// oneKeyScores emits the VNNI score kernels' last loop, from label k1: the
// keys left after the tiles, one at a time, 64 bytes of the query (from
// q up to qend) and of the key per block step, then the bias, scale and
// store (intScore1) and RET.
func oneKeyScores(s, q, k, n, stride, qend Register, bias, mult VecVirtual, block func(qo, ko Register, acc VecVirtual)) {
	Label("k1")
	TESTQ(n, n)
	JZ(LabelRef("ret"))
	{
		acc := ZMM()
		VPXORD(acc, acc, acc)
		qo, ko := GP64(), GP64()
		MOVQ(q, qo)
		MOVQ(k, ko)
		Label("k1_d")
		block(qo, ko, acc)
		ADDQ(U8(64), qo)
		ADDQ(U8(64), ko)
		CMPQ(qo, qend)
		JL(LabelRef("k1_d"))
		VMOVSS(intScore1(acc, true, bias.AsX(), mult.AsX()), mem(s, 0))
		ADDQ(U8(4), s)
		ADDQ(stride, k)
		DECQ(n)
		JMP(LabelRef("k1"))
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

// attnDotI8AVX2 is the kernel for CPUs without VNNI: sixteen codes of the
// query and of four keys at a time are sign-extended to int16 and
// multiplied and added in pairs (VPMADDWD), which is exact: a pair of
// products is at most 2·127² in magnitude. bias is unused.
func attnDotI8AVX2() {
	name := "attnDotI8AVX2"
	TEXT(name, NOSPLIT, i8DotSig)
	Doc(name+" sets s[j] = mult·float32(Σ_i q[i]·k[j*stride+i]) for j < n, d a",
		"positive multiple of 16 (AVX2); bias is not used.")
	mult := Load(Param("mult"), XMM())
	s, q, k := Load(Param("s"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
	n, d, stride := Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	store := func(acc VecVirtual, disp int) {
		VMOVSS(intScore1(acc, false, nil, mult), mem(s, disp))
	}
	avx2Scores(s, k, n, d, stride, 16, store, func(off Register) []VecVirtual {
		qv := YMM()
		VPMOVSXBW(at(q, off), qv)
		return []VecVirtual{qv}
	}, func(kp, off Register, qv []VecVirtual, acc VecVirtual) {
		t := YMM()
		VPMOVSXBW(at(kp, off), t)
		VPMADDWD(qv[0], t, t)
		VPADDD(t, acc, acc)
	})
}

// avx2Scores emits the AVX2 integer score kernels' loops: four keys at a
// time, then one, each over the key's bytes in steps of step (up to the
// byte count in d); queries loads the query codes that meet the bytes at
// off, block multiplies and adds one key's bytes at off into acc, and
// store converts and stores one key's score at disp bytes past s.
func avx2Scores(s, k, n, d, stride Register, step int, store func(acc VecVirtual, disp int),
	queries func(off Register) []VecVirtual, block func(kp, off Register, qv []VecVirtual, acc VecVirtual)) {
	const R = 4
	Label("row4")
	CMPQ(n, U8(R))
	JL(LabelRef("row"))
	{
		kr := []Register{k, GP64(), GP64(), GP64()}
		for r := 1; r < R; r++ {
			LEAQ(Mem{Base: kr[r-1], Index: stride, Scale: 1}, kr[r])
		}
		accs := make([]VecVirtual, R)
		for r := range accs {
			accs[r] = YMM()
			VPXOR(accs[r], accs[r], accs[r])
		}
		off := GP64()
		XORQ(off, off)
		Label("col4")
		qv := queries(off)
		for r := range R {
			block(kr[r], off, qv, accs[r])
		}
		ADDQ(U8(step), off)
		CMPQ(off, d)
		JL(LabelRef("col4"))
		for r := range R {
			store(accs[r], 4*r)
		}
		ADDQ(U8(4*R), s)
		LEAQ(Mem{Base: kr[3], Index: stride, Scale: 1}, k)
		SUBQ(U8(R), n)
		JMP(LabelRef("row4"))
	}
	Label("row")
	TESTQ(n, n)
	JZ(LabelRef("ret"))
	{
		acc := YMM()
		VPXOR(acc, acc, acc)
		off := GP64()
		XORQ(off, off)
		Label("col")
		block(k, off, queries(off), acc)
		ADDQ(U8(step), off)
		CMPQ(off, d)
		JL(LabelRef("col"))
		store(acc, 0)
		ADDQ(U8(4), s)
		ADDQ(stride, k)
		DECQ(n)
		JMP(LabelRef("row"))
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

// reduceInt adds the int32 lanes of v (a ZMM when zmm, else a YMM) into
// the low lane of the returned XMM register.
func reduceInt(v VecVirtual, zmm bool) VecVirtual {
	y := v
	if zmm {
		y = YMM()
		VEXTRACTI64X4(U8(1), v, y)
		VPADDD(y, v.AsY(), y)
	}
	x := XMM()
	if zmm {
		VEXTRACTI32X4(U8(1), y, x) // EVEX form: y may be Y16-Y31
	} else {
		VEXTRACTI128(U8(1), y, x)
	}
	VPADDD(x, y.AsX(), x)
	t := XMM()
	VPSHUFD(U8(0x4E), x, t)
	VPADDD(t, x, x)
	VPSHUFD(U8(0xB1), x, t)
	VPADDD(t, x, x)
	return x
}

// intScores16 reduces sixteen int32 accumulators (lane kk's in
// acc[4·(kk%4) + kk/4]) with transposeTree16, takes the bias out and
// scales by mult: sixteen scores in one vector.
func intScores16(acc []VecVirtual, bias, mult VecVirtual) VecVirtual {
	w := transposeTree16(acc, func(x, y, dst VecVirtual) { VPADDD(x, y, dst) })
	VPSUBD(bias, w, w)
	VCVTDQ2PS(w, w)
	VMULPS(mult, w, w)
	return w
}

// intScore1 reduces one key's int32 accumulator (a ZMM when zmm, else a
// YMM), takes the bias out (nil: none) and scales by mult: the score in
// the low lane of an XMM register.
func intScore1(acc VecVirtual, zmm bool, bias, mult Op) VecVirtual {
	x := reduceInt(acc, zmm)
	if bias != nil {
		VPSUBD(bias, x, x)
	}
	VCVTDQ2PS(x, x)
	VMULSS(mult, x, x)
	return x
}
