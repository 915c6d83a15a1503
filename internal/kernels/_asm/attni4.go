package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// attentionI4 emits the kernels of attention over a 4-bit cache
// (attend_i4.go): integer scores of the int8 query codes against the
// keys' 4-bit codes, and weighted sums of the values' codes. A vector of
// d codes is d/2 bytes; byte b holds code b (low nibble) and code b+d/2
// (high nibble), two's complement.
func attentionI4() {
	attnDotVNNI(true)
	attnDotQ2VNNI(true)
	attnDotQ2VNNI(false)
	attnDotI4AVX2()
	attnSumI4(false)
	attnSumI4(true)
	hadamardI4(true)
	hadamardI4(false)
	for _, add := range []bool{false, true} {
		attnSumW16I4(add, 1)
		attnSumW16I4(add, 2)
	}
	quantW16()
	quantI4()
}

// i4Prefetch is how far ahead (bytes) the 4-bit attention kernels ask for
// the keys and values they will read: enough to cover the memory's latency
// at the rate they consume a cache that does not fit the caches. Measured
// on the 0.6B step's attention at position 4,000 (BenchmarkAttendLayers):
// 4096 beat 0, 2048 and 8192.
var i4Prefetch = 4096

const i4DotSig = "func(s *float32, q *int8, k *byte, n, d, stride int, mult float32, bias int32)"

// broadcastBytes sets every byte of a new vector of isa i to b.
func broadcastBytes(i isa, b byte) VecVirtual {
	r := GP32()
	MOVL(U32(uint32(b)*0x01010101), r)
	x := XMM()
	VMOVD(r, x)
	v := i.vec()
	VPBROADCASTD(x, v)
	return v
}

// unpackI4 splits the bytes at m into offset codes (c+8, 0..15): the low
// nibbles into lo and the high nibbles into hi. XOR 0x88 turns both
// two's-complement nibbles of a byte into offset binary at once.
func unpackI4(m Op, flip, low VecVirtual, zmm bool) (lo, hi VecVirtual) {
	if zmm {
		t := ZMM()
		VPXORD(m, flip, t)
		lo, hi = ZMM(), ZMM()
		VPANDD(t, low, lo)
		VPSRLW(U8(4), t, hi)
		VPANDD(hi, low, hi)
		return lo, hi
	}
	t := YMM()
	VPXOR(m, flip, t)
	lo, hi = YMM(), YMM()
	VPAND(t, low, lo)
	VPSRLW(U8(4), t, hi)
	VPAND(hi, low, hi)
	return lo, hi
}

// attnDotI4AVX2 is the kernel for CPUs without VNNI: four keys at a time,
// 32 bytes of each; VPMADDUBSW multiplies the unsigned offset codes by the
// signed query codes and adds pairs (at most 2·15·128 in magnitude), the
// low and high halves are added as int16 (at most twice that) and
// VPMADDWD by ones widens the pairs to int32. Exact, like the VNNI kernel.
func attnDotI4AVX2() {
	name := "attnDotI4AVX2"
	TEXT(name, NOSPLIT, i4DotSig)
	Doc(name+" sets s[j] = mult·float32(Σ_i q[i]·c_j,i) for j < n, c_j the 4-bit codes at",
		"k[j*stride:][:d/2], d a positive multiple of 64 and bias = 8·Σ_i q[i] (AVX2).")
	mult := Load(Param("mult"), XMM())
	bias := XMM()
	VMOVD(Load(Param("bias"), GP32()), bias)
	flip, low := broadcastBytes(avx2, 0x88), broadcastBytes(avx2, 0x0F)
	ones := YMM()
	{
		r := GP32()
		MOVL(U32(0x00010001), r)
		x := XMM()
		VMOVD(r, x)
		VPBROADCASTD(x, ones)
	}
	s, q, k := Load(Param("s"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
	n, d, stride := Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	SHRQ(U8(1), d) // bytes per key
	qh := GP64()
	LEAQ(Mem{Base: q, Index: d, Scale: 1}, qh)
	store := func(acc VecVirtual, disp int) {
		VMOVSS(intScore1(acc, false, bias, mult), mem(s, disp))
	}
	avx2Scores(s, k, n, d, stride, 32, store, func(off Register) []VecVirtual {
		ql, qhv := YMM(), YMM()
		VMOVDQU(at(q, off), ql)
		VMOVDQU(at(qh, off), qhv)
		return []VecVirtual{ql, qhv}
	}, func(kp, off Register, qv []VecVirtual, acc VecVirtual) {
		lo, hi := unpackI4(at(kp, off), flip, low, false)
		VPMADDUBSW(qv[0], lo, lo)
		VPMADDUBSW(qv[1], hi, hi)
		VPADDW(hi, lo, lo)
		VPMADDWD(ones, lo, lo)
		VPADDD(lo, acc, acc)
	})
}

// attnSumI4 emits the float weighted sums over 4-bit values, for CPUs
// without AVX512-VNNI (and rows whose weights are not finite, which the
// integer sums leave to these): each block of 8 bytes is sign-extended to
// int32 lanes, the high codes are an arithmetic shift right by 4 and the
// low codes a shift left by 28 and back, both converted exactly, and
// p_j times them is added to the accumulators, one FMA per vector, in
// increasing j.
func attnSumI4(add bool) {
	i := avx2
	const B = 8 // bytes per block: one int32 lane each
	name, verb := "attnSumI4AVX2", "sets out[:d] ="
	if add {
		name, verb = "attnSumAddI4AVX2", "adds to out[:d]"
	}
	TEXT(name, NOSPLIT, "func(out, p *float32, v *byte, n, d, stride int)")
	Doc(name+" "+verb+" Σ_j p[j]·c_j over j < n in increasing j, c_j the 4-bit codes at",
		fmt.Sprintf("v[j*stride:][:d/2], d a multiple of %d, n > 0.", 2*B))
	out, v := Load(Param("out"), GP64()), Load(Param("v"), GP64())
	d, stride := Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	o := newI4Out(out, d, 1)
	for _, c := range []int{4, 1} {
		chunk := fmt.Sprintf("%s_c%d", name, c)
		next := name + "_ret"
		if c > 1 {
			next = name + "_c1"
		}
		Label(chunk)
		CMPQ(o.rem, U32(c*B))
		JL(LabelRef(next))
		acc := make([][2]VecVirtual, c) // block u, low (0) or high half
		for u := range c {
			for h := range 2 {
				acc[u][h] = i.vec()
				if add {
					VMOVUPS(o.at(0, h, 4*B*u), acc[u][h])
				} else {
					zero(acc[u][h])
				}
			}
		}
		p, n, vp := Load(Param("p"), GP64()), Load(Param("n"), GP64()), GP64()
		MOVQ(v, vp)
		Label(chunk + "_j")
		b := i.vec()
		VBROADCASTSS(mem(p, 0), b)
		for u := range c {
			x, lo := i.vec(), i.vec()
			VPMOVSXBD(mem(vp, B*u), x)
			VPSLLD(U8(28), x, lo)
			VPSRAD(U8(28), lo, lo)
			VPSRAD(U8(4), x, x)
			VCVTDQ2PS(lo, lo)
			VCVTDQ2PS(x, x)
			VFMADD231PS(lo, b, acc[u][0])
			VFMADD231PS(x, b, acc[u][1])
		}
		ADDQ(U32(4), p)
		ADDQ(stride, vp)
		DECQ(n)
		JNZ(LabelRef(chunk + "_j"))
		for u := range c {
			for h := range 2 {
				VMOVUPS(acc[u][h], o.at(0, h, 4*B*u))
			}
		}
		o.advance(c*B, v)
		JMP(LabelRef(chunk))
	}
	Label(name + "_ret")
	VZEROUPPER()
	RET()
}

// i4Out addresses the float32 outputs of the 4-bit sum kernels, which
// walk the codes' bytes: byte b feeds output b (its low code) and output
// b+d/2 (its high code), for Q queries whose outputs are d apart.
type i4Out struct {
	out, ho, db, dh Register // outputs; 2d, 4d and 6d bytes (db, dh: Q = 2)
	rem             Register // bytes of codes left
}

func newI4Out(out, d Register, Q int) *i4Out {
	o := &i4Out{out: out, ho: GP64(), rem: GP64()}
	MOVQ(d, o.ho)
	SHLQ(U8(1), o.ho)
	MOVQ(d, o.rem)
	SHRQ(U8(1), o.rem)
	if Q == 2 {
		o.db, o.dh = GP64(), GP64()
		MOVQ(d, o.db)
		SHLQ(U8(2), o.db)
		LEAQ(Mem{Base: o.db, Index: o.ho, Scale: 1}, o.dh)
	}
	return o
}

// at is query q's output for the low (half 0) or high code of the byte
// disp/4 bytes past the current one.
func (o *i4Out) at(q, half, disp int) Mem {
	idx := [2][2]Register{{nil, o.ho}, {o.db, o.dh}}[q][half]
	if idx == nil {
		return mem(o.out, disp)
	}
	return Mem{Base: o.out, Index: idx, Scale: 1, Disp: disp}
}

// advance moves past n bytes of codes (v is the codes' pointer).
func (o *i4Out) advance(n int, v Register) {
	ADDQ(U32(4*n), o.out)
	ADDQ(U32(n), v)
	SUBQ(U32(n), o.rem)
}

// hadamardI4 emits the 4-bit cache's rotation (signFirst: x ← H·(σ⊙x)·scale)
// or its inverse (x ← σ⊙(H·x)·scale) for d a power of two, at least 16.
// The butterflies between elements less than 16 apart run inside a
// register: a permute brings each element's partner, and one FMA with a
// vector of ±1 (tab: the four sign vectors of strides 1, 2, 4 and 8) forms
// x_i + x_{i^h} or x_{i^h} − x_i exactly as the pure-Go loop's addition or
// subtraction would; the wider butterflies add and subtract whole vectors.
// Multiplying by ±1 is exact, so the result is bitwise the pure-Go one.
func hadamardI4(signFirst bool) {
	name := "unrotateI4AVX512"
	what := "x ← σ⊙(H·x)·scale"
	if signFirst {
		name, what = "rotateI4AVX512", "x ← H·(σ⊙x)·scale"
	}
	TEXT(name, NOSPLIT, "func(x *float32, d int, sign *float32, scale float32, tab *float32)")
	Doc(name+" sets "+what+" for x[:d], H the unnormalized Walsh–Hadamard matrix,",
		"σ = sign[:d] (±1), d a power of two of at least 16 (AVX-512).")
	x, d, sign, tab := Load(Param("x"), GP64()), Load(Param("d"), GP64()), Load(Param("sign"), GP64()), Load(Param("tab"), GP64())
	scale := ZMM()
	VBROADCASTSS(Load(Param("scale"), XMM()), scale)
	s := make([]VecVirtual, 4)
	for i := range s {
		s[i] = ZMM()
		VMOVUPS(mem(tab, 64*i), s[i])
	}
	db := GP64()
	MOVQ(d, db)
	SHLQ(U8(2), db) // bytes
	off := GP64()
	// Pass 1: the signs (rotation) and the four in-register stages.
	XORQ(off, off)
	Label(name + "_p1")
	v, y := ZMM(), ZMM()
	VMOVUPS(at(x, off), v)
	if signFirst {
		VMULPS(at(sign, off), v, v)
	}
	VPERMILPS(U8(0xB1), v, y) // partner i^1
	VFMADD213PS(y, s[0], v)
	VPERMILPS(U8(0x4E), v, y) // i^2
	VFMADD213PS(y, s[1], v)
	VSHUFF32X4(U8(0xB1), v, v, y) // i^4
	VFMADD213PS(y, s[2], v)
	VSHUFF32X4(U8(0x4E), v, v, y) // i^8
	VFMADD213PS(y, s[3], v)
	VMOVUPS(v, at(x, off))
	ADDQ(U8(64), off)
	CMPQ(off, db)
	JL(LabelRef(name + "_p1"))
	// Pass 2: strides of 16 elements and more (h bytes).
	h := GP64()
	MOVQ(U32(64), h)
	Label(name + "_h")
	CMPQ(h, db)
	JGE(LabelRef(name + "_p3"))
	blk := GP64() // start of a block of 2h bytes
	XORQ(blk, blk)
	Label(name + "_blk")
	{
		lo, hi, end := GP64(), GP64(), GP64()
		LEAQ(Mem{Base: x, Index: blk, Scale: 1}, lo)
		LEAQ(Mem{Base: lo, Index: h, Scale: 1}, hi)
		MOVQ(hi, end)
		Label(name + "_j")
		a, b, t := ZMM(), ZMM(), ZMM()
		VMOVUPS(mem(lo, 0), a)
		VMOVUPS(mem(hi, 0), b)
		VADDPS(b, a, t)
		VSUBPS(b, a, a)
		VMOVUPS(t, mem(lo, 0))
		VMOVUPS(a, mem(hi, 0))
		ADDQ(U8(64), lo)
		ADDQ(U8(64), hi)
		CMPQ(lo, end)
		JL(LabelRef(name + "_j"))
	}
	LEAQ(Mem{Base: blk, Index: h, Scale: 2}, blk)
	CMPQ(blk, db)
	JL(LabelRef(name + "_blk"))
	SHLQ(U8(1), h)
	JMP(LabelRef(name + "_h"))
	// Pass 3: the scale (and the inverse's signs).
	Label(name + "_p3")
	XORQ(off, off)
	Label(name + "_p3l")
	w := ZMM()
	VMOVUPS(at(x, off), w)
	if !signFirst {
		VMULPS(at(sign, off), w, w)
	}
	VMULPS(scale, w, w)
	VMOVUPS(w, at(x, off))
	ADDQ(U8(64), off)
	CMPQ(off, db)
	JL(LabelRef(name + "_p3l"))
	VZEROUPPER()
	RET()
}

// attnDotQ2VNNI emits attnDotQ2I8VNNI and attnDotQ2I4VNNI: the VNNI score
// kernel for two query heads over the same keys, each key block loaded
// (and, for 4-bit codes, unpacked) once for both. Eight keys at a time:
// head h's key kk accumulates where transposeTree16 delivers lane 8h+kk,
// so one reduction yields both heads' eight scores. Each score is bitwise
// what the one-head kernel computes (integer sums are exact).
func attnDotQ2VNNI(i4 bool) {
	name, ktyp, one, codes, pf := "attnDotQ2I8VNNI", "int8", "attnDotI8VNNI", "the codes at k[j*stride:][:d]", i8Prefetch
	mult16 := "d a positive multiple of 64 and bias_h = 128·Σ_i q[h*d+i]"
	if i4 {
		name, ktyp, one, codes, pf = "attnDotQ2I4VNNI", "byte", "attnDotI4VNNI", "the 4-bit codes at k[j*stride:][:d/2]", i4Prefetch
		mult16 = "d a positive multiple of 128 and bias_h = 8·Σ_i q[h*d+i]"
	}
	TEXT(name, NOSPLIT, "func(s *float32, sstride int, q *int8, k *"+ktyp+", n, d, stride int, mult0, mult1 float32, bias0, bias1 int32)")
	Doc(name+" sets s[h*sstride+j] = mult_h·float32(Σ_i q[h*d+i]·c_j,i) for h < 2 and j < n, c_j",
		codes+", "+mult16,
		"(AVX512_VNNI); each score is bitwise what "+one+" computes.")
	// mult and bias: head 0 in lanes 0-7, head 1 in lanes 8-15.
	mult, bias := ZMM(), ZMM()
	{
		m0, m1 := Load(Param("mult0"), XMM()), Load(Param("mult1"), XMM())
		y0, y1 := YMM(), YMM()
		VBROADCASTSS(m0, y0)
		VBROADCASTSS(m1, y1)
		VINSERTF32X8(U8(1), y1, y0.AsZ(), mult)
		b0, b1 := XMM(), XMM()
		VMOVD(Load(Param("bias0"), GP32()), b0)
		VMOVD(Load(Param("bias1"), GP32()), b1)
		z0, z1 := YMM(), YMM()
		VPBROADCASTD(b0, z0)
		VPBROADCASTD(b1, z1)
		VINSERTI32X8(U8(1), z1, z0.AsZ(), bias)
	}
	s, ss, q, k := Load(Param("s"), GP64()), Load(Param("sstride"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
	n, d, stride := Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	SHLQ(U8(2), ss)
	c := newVNNICodes(i4, d)
	qend := GP64()
	LEAQ(Mem{Base: q, Index: c.kbytes, Scale: 1}, qend)
	stride3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, stride3)
	key, queries := c.key, c.queries
	Label("k8")
	CMPQ(n, U8(8))
	JL(LabelRef("k1"))
	{
		acc := make([]VecVirtual, 16)
		for a := range acc {
			acc[a] = ZMM()
			VPXORD(acc[a], acc[a], acc[a])
		}
		kb := []Register{GP64(), GP64()}
		MOVQ(k, kb[0])
		LEAQ(Mem{Base: k, Index: stride, Scale: 4}, kb[1])
		qo, qo1 := GP64(), GP64()
		MOVQ(q, qo)
		LEAQ(Mem{Base: q, Index: d, Scale: 1}, qo1)
		Label("k8_d")
		qv := [][]VecVirtual{queries(qo), queries(qo1)}
		for kk := range 8 {
			if pf > 0 {
				PREFETCHT0(row4(kb[kk/4], stride, stride3, kk%4, pf))
			}
			kv := key(row4(kb[kk/4], stride, stride3, kk%4, 0))
			for h := range 2 {
				L := 8*h + kk
				for u, t := range kv {
					vpdpbusd(qv[h][u], t, acc[4*(L%4)+L/4])
				}
			}
		}
		ADDQ(U8(64), qo)
		ADDQ(U8(64), qo1)
		for _, r := range kb {
			ADDQ(U8(64), r)
		}
		CMPQ(qo, qend)
		JL(LabelRef("k8_d"))
		w := intScores16(acc, bias, mult)
		VMOVUPS(w.AsY(), mem(s, 0))
		hiY := YMM()
		VEXTRACTF32X8(U8(1), w, hiY)
		VMOVUPS(hiY, Mem{Base: s, Index: ss, Scale: 1})
		ADDQ(U8(32), s)
		LEAQ(Mem{Base: k, Index: stride, Scale: 8}, k)
		SUBQ(U8(8), n)
		JMP(LabelRef("k8"))
	}
	Label("k1")
	TESTQ(n, n)
	JZ(LabelRef("ret"))
	{
		a0, a1 := ZMM(), ZMM()
		VPXORD(a0, a0, a0)
		VPXORD(a1, a1, a1)
		qo, qo1, ko := GP64(), GP64(), GP64()
		MOVQ(q, qo)
		LEAQ(Mem{Base: q, Index: d, Scale: 1}, qo1)
		MOVQ(k, ko)
		Label("k1_d")
		kv := key(mem(ko, 0))
		for h, p := range []Register{qo, qo1} {
			a := []VecVirtual{a0, a1}[h]
			for u, qx := range queries(p) {
				vpdpbusd(qx, kv[u], a)
			}
		}
		ADDQ(U8(64), qo)
		ADDQ(U8(64), qo1)
		ADDQ(U8(64), ko)
		CMPQ(qo, qend)
		JL(LabelRef("k1_d"))
		VMOVSS(intScore1(a0, true, bias.AsX(), mult.AsX()), mem(s, 0))
		b1 := XMM()
		VMOVD(Load(Param("bias1"), GP32()), b1)
		VMOVSS(intScore1(a1, true, b1, Load(Param("mult1"), XMM())), Mem{Base: s, Index: ss, Scale: 1})
		ADDQ(U8(4), s)
		ADDQ(stride, k)
		DECQ(n)
		JMP(LabelRef("k1"))
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

// vpdpwssd emits VPDPWSSD: acc += the products of signed word pairs of a
// and b, added per doubleword (AVX512_VNNI).
func vpdpwssd(a, b, acc Op) { vnni("VPDPWSSD", a, b, acc) }

// attnSumW16I4 emits the integer weighted sums of Q (1 or 2) queries over
// 4-bit values (attend_i4.go's sumW16): 16-bit weights w (pairs of
// positions broadcast as one doubleword) times the codes of two positions
// (one word each in a doubleword lane) with VPDPWSSD, exact in int32; at
// the end each sum is converted and scaled (add: fused into out).
// Per pair of positions, 32 code pairs cost two widening loads, a shift
// and an OR to interleave the positions, and two shift pairs to extract
// the low and high codes as signed words, shared by the Q queries.
func attnSumW16I4(add bool, Q int) {
	name, verb := fmt.Sprintf("attnSumW16Q%dI4VNNI", Q), "sets out[h*d:][:d] to"
	if add {
		name, verb = fmt.Sprintf("attnSumAddW16Q%dI4VNNI", Q), "adds to out[h*d:][:d]"
	}
	TEXT(name, NOSPLIT, "func(out *float32, w *int16, wstride int, v *byte, n, d, stride int, scale0, scale1 float32)")
	Doc(name+" "+verb+" scale_h·float32(Σ_j w[h*wstride+j]·c_j) for h < "+fmt.Sprint(Q)+", c_j the",
		"4-bit codes at v[j*stride:][:d/2], the sum over j < n exact in int32; d a multiple of 32,",
		"n > 0; w[h*wstride+n] is read but not used when n is odd (AVX512_VNNI).")
	out, v := Load(Param("out"), GP64()), Load(Param("v"), GP64())
	d, stride := Load(Param("d"), GP64()), Load(Param("stride"), GP64())
	sc := make([]VecVirtual, Q)
	for h := range Q {
		sc[h] = ZMM()
		VBROADCASTSS(Load(Param(fmt.Sprint("scale", h)), XMM()), sc[h])
	}
	o := newI4Out(out, d, Q)
	var ws Register
	if Q == 2 {
		ws = Load(Param("wstride"), GP64())
		SHLQ(U8(1), ws)
	}
	codes := func(t VecVirtual) (lo, hi VecVirtual) {
		lo, hi = ZMM(), ZMM()
		VPSLLW(U8(12), t, lo)
		VPSRAW(U8(12), lo, lo)
		VPSLLW(U8(8), t, hi)
		VPSRAW(U8(12), hi, hi)
		return lo, hi
	}
	for _, c := range []int{4, 1} {
		chunk := fmt.Sprintf("%s_c%d", name, c)
		next := name + "_ret"
		if c > 1 {
			next = name + "_c1"
		}
		Label(chunk)
		CMPQ(o.rem, U32(16*c))
		JL(LabelRef(next))
		acc := make([][][2]VecVirtual, Q)
		for h := range acc {
			acc[h] = make([][2]VecVirtual, c)
			for u := range c {
				for k := range 2 {
					acc[h][u][k] = ZMM()
					VPXORD(acc[h][u][k], acc[h][u][k], acc[h][u][k])
				}
			}
		}
		wp, n, vp := Load(Param("w"), GP64()), Load(Param("n"), GP64()), GP64()
		MOVQ(v, vp)
		step := func(pair bool) {
			wb := make([]VecVirtual, Q)
			for h := range Q {
				wb[h] = ZMM()
				if h == 0 {
					VPBROADCASTD(mem(wp, 0), wb[h])
				} else {
					VPBROADCASTD(Mem{Base: wp, Index: ws, Scale: 1}, wb[h])
				}
			}
			if i4Prefetch > 0 && c == 4 {
				PREFETCHT0(mem(vp, i4Prefetch))
				if pair {
					PREFETCHT0(Mem{Base: vp, Index: stride, Scale: 1, Disp: i4Prefetch})
				}
			}
			for u := range c {
				t := ZMM()
				VPMOVZXBD(mem(vp, 16*u), t)
				if pair {
					r1 := ZMM()
					VPMOVZXBD(Mem{Base: vp, Index: stride, Scale: 1, Disp: 16 * u}, r1)
					VPSLLD(U8(16), r1, r1)
					VPORD(r1, t, t)
				}
				lo, hi := codes(t)
				for h := range Q {
					vpdpwssd(wb[h], lo, acc[h][u][0])
					vpdpwssd(wb[h], hi, acc[h][u][1])
				}
			}
		}
		Label(chunk + "_j")
		CMPQ(n, U8(2))
		JL(LabelRef(chunk + "_odd"))
		step(true)
		ADDQ(U8(4), wp)
		LEAQ(Mem{Base: vp, Index: stride, Scale: 2}, vp)
		SUBQ(U8(2), n)
		JMP(LabelRef(chunk + "_j"))
		Label(chunk + "_odd")
		TESTQ(n, n)
		JZ(LabelRef(chunk + "_store"))
		step(false)
		Label(chunk + "_store")
		for h := range Q {
			for u := range c {
				for k := range 2 {
					a := acc[h][u][k]
					VCVTDQ2PS(a, a)
					if add {
						VFMADD213PS(o.at(h, k, 64*u), sc[h], a)
					} else {
						VMULPS(sc[h], a, a)
					}
					VMOVUPS(a, o.at(h, k, 64*u))
				}
			}
		}
		o.advance(16*c, v)
		JMP(LabelRef(chunk))
	}
	Label(name + "_ret")
	VZEROUPPER()
	RET()
}

// quantW16 emits the helpers that turn a chunk of attention weights into
// 16-bit integers: maxSumAVX512 (the largest weight and the sum, which is
// not finite exactly when a weight is not) and toW16AVX512 (w = the
// weight times inv, rounded to nearest even; the weights are non-negative
// and at most the largest, so the codes fit 0..32767).
func quantW16() {
	{
		TEXT("maxSumAVX512", NOSPLIT, "func(a *float32, n int) (max, sum float32)")
		Doc("maxSumAVX512 returns the largest of a[:n] and their sum, n a positive multiple of 16",
			"(AVX-512); NaNs are ignored by the maximum and propagate through the sum.")
		a, n := Load(Param("a"), GP64()), Load(Param("n"), GP64())
		m, s := ZMM(), ZMM()
		VXORPS(m, m, m)
		VXORPS(s, s, s)
		Label("maxsum_loop")
		x := ZMM()
		VMOVUPS(mem(a, 0), x)
		VMAXPS(x, m, m)
		VADDPS(x, s, s)
		ADDQ(U8(64), a)
		SUBQ(U8(16), n)
		JNZ(LabelRef("maxsum_loop"))
		y := YMM()
		VEXTRACTF64X4(U8(1), m, y)
		VMAXPS(y, m.AsY(), y)
		xx := XMM()
		VEXTRACTF32X4(U8(1), y, xx) // EVEX form: y may be Y16-Y31
		VMAXPS(xx, y.AsX(), xx)
		t := XMM()
		VMOVHLPS(xx, xx, t)
		VMAXPS(t, xx, xx)
		VMOVSHDUP(xx, t)
		VMAXSS(t, xx, xx)
		Store(xx, ReturnIndex(0))
		Store(avx512.reduce(s), ReturnIndex(1))
		VZEROUPPER()
		RET()
	}
	{
		TEXT("toW16AVX512", NOSPLIT, "func(w *int16, a *float32, n int, inv float32)")
		Doc("toW16AVX512 sets w[j] = int16(round_half_even(a[j]·inv)) for j < n, n a positive",
			"multiple of 16, saturating; w may overlap a at or below it (AVX-512).")
		w, a, n := Load(Param("w"), GP64()), Load(Param("a"), GP64()), Load(Param("n"), GP64())
		inv := ZMM()
		VBROADCASTSS(Load(Param("inv"), XMM()), inv)
		Label("tow16_loop")
		x := ZMM()
		VMULPS(mem(a, 0), inv, x)
		VCVTPS2DQ(x, x)
		VPMOVSDW(x, mem(w, 0))
		ADDQ(U8(64), a)
		ADDQ(U8(32), w)
		SUBQ(U8(16), n)
		JNZ(LabelRef("tow16_loop"))
		VZEROUPPER()
		RET()
	}
}

// quantI4 emits codesI4AVX512, the packing half of QuantizeInt4: codes
// round_half_even(y·inv) clamped to [-7, 7] (VCVTPS2DQ rounds to nearest
// even under the default MXCSR), the first half's into the low nibbles
// and the second half's into the high nibbles.
func quantI4() {
	TEXT("codesI4AVX512", NOSPLIT, "func(dst *byte, y *float32, d int, inv float32)")
	Doc("codesI4AVX512 sets dst[b] = c_b&15 | c_{b+d/2}<<4 for b < d/2, c_i = round_half_even(y[i]·inv)",
		"clamped to [-7, 7], d a positive multiple of 32 (AVX-512).")
	dst, y, d := Load(Param("dst"), GP64()), Load(Param("y"), GP64()), Load(Param("d"), GP64())
	inv := ZMM()
	VBROADCASTSS(Load(Param("inv"), XMM()), inv)
	bound := func(c uint32) VecVirtual {
		r := GP32()
		MOVL(U32(c), r)
		x := XMM()
		VMOVD(r, x)
		v := ZMM()
		VPBROADCASTD(x, v)
		return v
	}
	lo7, hi7, mask := bound(0xFFFFFFF9), bound(7), bound(15)
	hb := GP64() // bytes of floats in a half
	MOVQ(d, hb)
	SHLQ(U8(1), hb)
	end := GP64()
	LEAQ(Mem{Base: y, Index: hb, Scale: 1}, end)
	Label("codesi4_loop")
	a, b := ZMM(), ZMM()
	VMULPS(mem(y, 0), inv, a)
	VMULPS(Mem{Base: y, Index: hb, Scale: 1}, inv, b)
	VCVTPS2DQ(a, a)
	VCVTPS2DQ(b, b)
	for _, v := range []VecVirtual{a, b} {
		VPMAXSD(lo7, v, v)
		VPMINSD(hi7, v, v)
	}
	VPANDD(mask, a, a)
	VPSLLD(U8(4), b, b)
	VPORD(b, a, a)
	VPMOVDB(a, mem(dst, 0))
	ADDQ(U8(64), y)
	ADDQ(U8(16), dst)
	CMPQ(y, end)
	JL(LabelRef("codesi4_loop"))
	VZEROUPPER()
	RET()
}
