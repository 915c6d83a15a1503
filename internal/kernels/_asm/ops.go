package main

import (
	"fmt"
	"math"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

var consts = map[string]Mem{}

// vconst returns a 64-byte read-only vector of v, usable as a full-width
// memory operand by both instruction sets.
func vconst(name string, bits uint32) Mem {
	if m, ok := consts[name]; ok {
		return m
	}
	m := GLOBL(name, RODATA|NOPTR)
	for i := range 16 {
		DATA(4*i, U32(bits))
	}
	consts[name] = m
	return m
}

func fconst(name string, v float32) Mem { return vconst(name, math.Float32bits(v)) }

// Polynomial of exp on [-ln2/2, ln2/2] (Cephes expf): about 1 ulp.
var expPoly = []float32{1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1}

// exp replaces v with e^v. Inputs are clamped to [-103.9, 88.37] so the
// result is 0 below (as exact e^v rounds to) and finite above; v = n·ln2 + r
// with n = round(v·log2e), e^r by polynomial, then scaled by 2^n: with
// VSCALEFPS on AVX-512, by two exponent-built factors 2^(n>>1)·2^(n-n>>1)
// on AVX2 so that subnormal results come out right.
func (i isa) exp(v VecVirtual) {
	// MAXPS/MINPS return their second source when either is NaN: v goes
	// there so that NaN propagates.
	c := i.vec()
	VMOVUPS(fconst("expLo", -103.9), c)
	VMAXPS(v, c, v)
	VMOVUPS(fconst("expHi", 88.37), c)
	VMINPS(v, c, v)
	n := i.vec()
	VMULPS(fconst("log2e", math.Log2E), v, n)
	if i.lanes == 16 {
		VRNDSCALEPS(U8(0), n, n) // nearest even
	} else {
		VROUNDPS(U8(0), n, n)
	}
	VFNMADD231PS(fconst("ln2hi", 0.693359375), n, v)
	VFNMADD231PS(fconst("ln2lo", -2.12194440e-4), n, v)
	p := i.vec()
	VMOVUPS(fconst("expP0", expPoly[0]), p)
	for k := 1; k < len(expPoly); k++ {
		VFMADD213PS(fconst(fmt.Sprintf("expP%d", k), expPoly[k]), v, p)
	}
	r2 := i.vec()
	VMULPS(v, v, r2)
	VFMADD213PS(v, r2, p)
	VADDPS(fconst("one", 1), p, p)
	if i.lanes == 16 {
		VSCALEFPS(n, p, v)
		return
	}
	ni, n1 := i.vec(), i.vec()
	VCVTPS2DQ(n, ni)
	VPSRAD(U8(1), ni, n1)
	VPSUBD(n1, ni, ni)
	bias := vconst("i127", 127)
	VPADDD(bias, n1, n1)
	VPADDD(bias, ni, ni)
	VPSLLD(U8(23), n1, n1)
	VPSLLD(U8(23), ni, ni)
	VMULPS(n1, p, p)
	VMULPS(ni, p, v)
}

// hreduce folds v with op into its low lane, in the same tree as reduce.
func (i isa) hreduce(v VecVirtual, op func(a, b, dst Op)) VecVirtual {
	y := v
	if i.lanes == 16 {
		y = YMM()
		VEXTRACTF64X4(U8(1), v, y)
		op(y, v.AsY(), y)
	}
	x := XMM()
	if i.lanes == 16 {
		VEXTRACTF32X4(U8(1), y, x)
	} else {
		VEXTRACTF128(U8(1), y, x)
	}
	op(x, y.AsX(), x)
	t := XMM()
	VMOVHLPS(x, x, t)
	op(t, x, x)
	VMOVSHDUP(x, t)
	op(t, x, x)
	return x
}

func vmaxps(a, b, dst Op) { VMAXPS(a, b, dst) }

// elementwise emits a loop over n (a multiple of lanes, possibly 0) that
// calls body with the byte offset register of the current vector.
func (i isa) elementwise(n Register, body func(off GPVirtual)) {
	off := GP64()
	XORQ(off, off)
	end := GP64()
	MOVQ(n, end)
	SHLQ(U8(2), end)
	Label("loop")
	CMPQ(off, end)
	JGE(LabelRef("done"))
	body(off)
	ADDQ(U32(i.bytes()), off)
	JMP(LabelRef("loop"))
	Label("done")
}

func at(base, off Register) Mem { return Mem{Base: base, Index: off, Scale: 1} }

func broadcastParam(name string, i isa) VecVirtual {
	s := Load(Param(name), XMM())
	v := i.vec()
	VBROADCASTSS(s, v)
	return v
}

func ops(i isa) {
	L := fmt.Sprint(i.lanes)
	{
		TEXT("dot"+i.name, NOSPLIT, "func(a, b *float32, n int) float32")
		Doc("dot"+i.name+" returns Σ a[k]·b[k] for k < n, n a multiple of "+L+": four",
			"vector accumulators over blocks of 4×"+L+", the rest into the first, then",
			"(acc0+acc1)+(acc2+acc3) reduced like the matrix kernels.")
		a, b, n := Load(Param("a"), GP64()), Load(Param("b"), GP64()), Load(Param("n"), GP64())
		acc := []VecVirtual{i.vec(), i.vec(), i.vec(), i.vec()}
		for _, v := range acc {
			zero(v)
		}
		off, end4, end := GP64(), GP64(), GP64()
		XORQ(off, off)
		MOVQ(n, end)
		SHLQ(U8(2), end)
		MOVQ(end, end4)
		ANDQ(I32(-4*i.bytes()), end4)
		Label("loop4")
		CMPQ(off, end4)
		JGE(LabelRef("loop1"))
		for u, v := range acc {
			t := i.vec()
			VMOVUPS(Mem{Base: a, Index: off, Scale: 1, Disp: u * i.bytes()}, t)
			VFMADD231PS(Mem{Base: b, Index: off, Scale: 1, Disp: u * i.bytes()}, t, v)
		}
		ADDQ(U32(4*i.bytes()), off)
		JMP(LabelRef("loop4"))
		Label("loop1")
		CMPQ(off, end)
		JGE(LabelRef("done"))
		t := i.vec()
		VMOVUPS(at(a, off), t)
		VFMADD231PS(at(b, off), t, acc[0])
		ADDQ(U32(i.bytes()), off)
		JMP(LabelRef("loop1"))
		Label("done")
		VADDPS(acc[1], acc[0], acc[0])
		VADDPS(acc[3], acc[2], acc[2])
		VADDPS(acc[2], acc[0], acc[0])
		s := i.reduce(acc[0])
		Store(s, ReturnIndex(0))
		VZEROUPPER()
		RET()
	}
	{
		TEXT("axpy"+i.name, NOSPLIT, "func(alpha float32, x, y *float32, n int)")
		Doc("axpy" + i.name + " computes y[k] = fma(alpha, x[k], y[k]) for k < n, n a multiple of " + L + ".")
		alpha := broadcastParam("alpha", i)
		x, y, n := Load(Param("x"), GP64()), Load(Param("y"), GP64()), Load(Param("n"), GP64())
		i.elementwise(n, func(off GPVirtual) {
			t := i.vec()
			VMOVUPS(at(y, off), t)
			VFMADD231PS(at(x, off), alpha, t)
			VMOVUPS(t, at(y, off))
		})
		VZEROUPPER()
		RET()
	}
	{
		TEXT("scaleMul"+i.name, NOSPLIT, "func(dst, x, w *float32, s float32, n int)")
		Doc("scaleMul" + i.name + " computes dst[k] = w[k]·(x[k]·s) for k < n, n a multiple of " + L + ".")
		s := broadcastParam("s", i)
		dst, x, w, n := Load(Param("dst"), GP64()), Load(Param("x"), GP64()), Load(Param("w"), GP64()), Load(Param("n"), GP64())
		i.elementwise(n, func(off GPVirtual) {
			t := i.vec()
			VMULPS(at(x, off), s, t)
			VMULPS(at(w, off), t, t)
			VMOVUPS(t, at(dst, off))
		})
		VZEROUPPER()
		RET()
	}
	{
		TEXT("scale"+i.name, NOSPLIT, "func(x *float32, s float32, n int)")
		Doc("scale" + i.name + " computes x[k] *= s for k < n, n a multiple of " + L + ".")
		s := broadcastParam("s", i)
		x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
		i.elementwise(n, func(off GPVirtual) {
			t := i.vec()
			VMULPS(at(x, off), s, t)
			VMOVUPS(t, at(x, off))
		})
		VZEROUPPER()
		RET()
	}
	{
		TEXT("maxf"+i.name, NOSPLIT, "func(x *float32, n int) float32")
		Doc("maxf" + i.name + " returns max(x[:n]), n a positive multiple of " + L + ".")
		x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
		m := i.vec()
		VMOVUPS(mem(x, 0), m)
		i.elementwise(n, func(off GPVirtual) {
			VMAXPS(at(x, off), m, m)
		})
		Store(i.hreduce(m, vmaxps), ReturnIndex(0))
		VZEROUPPER()
		RET()
	}
	{
		TEXT("expSub"+i.name, NOSPLIT, "func(x *float32, m float32, n int) float32")
		Doc("expSub"+i.name+" replaces x[k] by e^(x[k]-m) for k < n, n a multiple of "+L+",",
			"and returns their sum (lane-wise, then reduced).")
		mv := broadcastParam("m", i)
		x, n := Load(Param("x"), GP64()), Load(Param("n"), GP64())
		sum := i.vec()
		zero(sum)
		i.elementwise(n, func(off GPVirtual) {
			t := i.vec()
			VMOVUPS(at(x, off), t)
			VSUBPS(mv, t, t)
			i.exp(t)
			VMOVUPS(t, at(x, off))
			VADDPS(t, sum, sum)
		})
		Store(i.reduce(sum), ReturnIndex(0))
		VZEROUPPER()
		RET()
	}
	{
		TEXT("siluMul"+i.name, NOSPLIT, "func(dst, gate, up *float32, n int)")
		Doc("siluMul"+i.name+" computes dst[k] = gate[k]·up[k] / (1 + e^-gate[k]) for k < n,",
			"n a multiple of "+L+".")
		dst, gate, up, n := Load(Param("dst"), GP64()), Load(Param("gate"), GP64()), Load(Param("up"), GP64()), Load(Param("n"), GP64())
		i.elementwise(n, func(off GPVirtual) {
			g, e := i.vec(), i.vec()
			VMOVUPS(at(gate, off), g)
			VXORPS(fconst("signbit", float32(math.Copysign(0, -1))), g, e)
			i.exp(e)
			VADDPS(fconst("one", 1), e, e)
			VMULPS(at(up, off), g, g)
			VDIVPS(e, g, g)
			VMOVUPS(g, at(dst, off))
		})
		VZEROUPPER()
		RET()
	}
	{
		TEXT("rope"+i.name, NOSPLIT, "func(x, cos, sin *float32, half, n int)")
		Doc("rope"+i.name+" rotates pairs (x[k], x[k+half]) by (cos[k], sin[k]) for k < n,",
			"n a multiple of "+L+":",
			"",
			"\tx[k], x[k+half] = x[k]·cos[k] - x[k+half]·sin[k], x[k+half]·cos[k] + x[k]·sin[k]")
		x, cs, sn := Load(Param("x"), GP64()), Load(Param("cos"), GP64()), Load(Param("sin"), GP64())
		half, n := Load(Param("half"), GP64()), Load(Param("n"), GP64())
		hx := GP64()
		LEAQ(Mem{Base: x, Index: half, Scale: 4}, hx)
		i.elementwise(n, func(off GPVirtual) {
			a, b, c, s, lo, hi := i.vec(), i.vec(), i.vec(), i.vec(), i.vec(), i.vec()
			VMOVUPS(at(x, off), a)
			VMOVUPS(at(hx, off), b)
			VMOVUPS(at(cs, off), c)
			VMOVUPS(at(sn, off), s)
			VMULPS(c, a, lo)
			VFNMADD231PS(s, b, lo)
			VMULPS(c, b, hi)
			VFMADD231PS(s, a, hi)
			VMOVUPS(lo, at(x, off))
			VMOVUPS(hi, at(hx, off))
		})
		VZEROUPPER()
		RET()
	}
	attention(i)
	if i.lanes == 16 {
		attentionBlock(kvF32)
	}
}

// attention emits the two halves of single-head attention around the
// softmax, over a float32 cache: the scaled scores q·k_j and the weighted
// sum Σ p_j·v_j. (attentionKV emits them for the narrower cache types.)
func attention(i isa) {
	attnScores(i, kvF32)
	attnSum(i, kvF32, false)
	attnSum(i, kvF32, true)
}

// attnScores emits the scores of one query against n keys stored as kt.
func attnScores(i isa, kt kvType) {
	L := fmt.Sprint(i.lanes)
	{
		name := "attnScores" + kt.name + i.name
		TEXT(name, NOSPLIT, "func(s, q *float32, k *"+kt.gotyp+", n, d, stride int, scale float32)")
		Doc(name+" sets s[j] = scale·(q·k[j*stride:][:d]) for j < n, d a positive",
			"multiple of "+L+"; each dot product is one accumulator over d, reduced like the",
			"matrix kernels."+kt.docWiden)
		sc := Load(Param("scale"), XMM())
		s, q, k := Load(Param("s"), GP64()), Load(Param("q"), GP64()), Load(Param("k"), GP64())
		n, d, stride := Load(Param("n"), GP64()), Load(Param("d"), GP64()), Load(Param("stride"), GP64())
		// off runs over the bytes of one key; the query is addressed at
		// qscale·off (float32 queries, narrower keys).
		kt.bytes(d)
		kt.bytes(stride)
		qat := func(off Register) Mem { return Mem{Base: q, Index: off, Scale: kt.qscale()} }
		// Four keys at a time: four independent accumulator chains hide
		// the FMA latency; each key's sum is still one accumulator over d
		// in the same order, so the scores do not depend on the blocking.
		const R = 4
		Label("row4")
		CMPQ(n, U8(R))
		JL(LabelRef("row"))
		{
			kr := []Register{k, GP64(), GP64(), GP64()}
			LEAQ(Mem{Base: k, Index: stride, Scale: 1}, kr[1])
			LEAQ(Mem{Base: kr[1], Index: stride, Scale: 1}, kr[2])
			LEAQ(Mem{Base: kr[2], Index: stride, Scale: 1}, kr[3])
			accs := make([]VecVirtual, R)
			for r := range accs {
				accs[r] = i.vec()
				zero(accs[r])
			}
			off := GP64()
			XORQ(off, off)
			Label("col4")
			qv := i.vec()
			VMOVUPS(qat(off), qv)
			for r := range R {
				t := i.vec()
				kt.load(i, at(kr[r], off), t)
				VFMADD231PS(qv, t, accs[r])
			}
			ADDQ(U32(i.lanes*kt.size), off)
			CMPQ(off, d)
			JL(LabelRef("col4"))
			for r := range R {
				x := i.reduce(accs[r])
				VMULSS(sc, x, x)
				VMOVSS(x, mem(s, 4*r))
			}
			ADDQ(U32(4*R), s)
			LEAQ(Mem{Base: kr[3], Index: stride, Scale: 1}, k)
			SUBQ(U8(R), n)
			JMP(LabelRef("row4"))
		}
		Label("row")
		TESTQ(n, n)
		JZ(LabelRef("ret"))
		acc := i.vec()
		zero(acc)
		off := GP64()
		XORQ(off, off)
		Label("col")
		t := i.vec()
		kt.load(i, at(k, off), t)
		VFMADD231PS(qat(off), t, acc)
		ADDQ(U32(i.lanes*kt.size), off)
		CMPQ(off, d)
		JL(LabelRef("col"))
		r := i.reduce(acc)
		VMULSS(sc, r, r)
		VMOVSS(r, mem(s, 0))
		ADDQ(U32(4), s)
		ADDQ(stride, k)
		DECQ(n)
		JMP(LabelRef("row"))
		Label("ret")
		VZEROUPPER()
		RET()
	}
}

// attnSum emits the weighted sum of values stored as kt; with add it
// continues sums already in out (attention over keys in chunks).
func attnSum(i isa, kt kvType, add bool) {
	L := fmt.Sprint(i.lanes)
	{
		const C = 8 // output vectors held in registers per pass over j
		name, verb := "attnSum"+kt.name+i.name, "sets out[:d] ="
		if add {
			name, verb = "attnSumAdd"+kt.name+i.name, "adds to out[:d]"
		}
		TEXT(name, NOSPLIT, "func(out, p *float32, v *"+kt.gotyp+", n, d, stride int)")
		Doc(name+" "+verb+" Σ_j p[j]·v[j*stride:][:d] over j < n in increasing j,",
			"d a multiple of "+L+", n > 0."+kt.docWiden)
		out, v := Load(Param("out"), GP64()), Load(Param("v"), GP64())
		d, stride := Load(Param("d"), GP64()), Load(Param("stride"), GP64())
		kt.bytes(stride)
		for _, c := range []int{C, 1} {
			chunk := fmt.Sprintf("chunk%d", c)
			next := "ret"
			if c > 1 {
				next = "chunk1"
			}
			Label(name + chunk)
			CMPQ(d, U32(c*i.lanes))
			JL(LabelRef(name + next))
			acc := make([]VecVirtual, c)
			for u := range acc {
				acc[u] = i.vec()
				if add {
					// Continuing from the stored sums is the same as
					// never having stopped: float32 stores are exact.
					VMOVUPS(mem(out, u*i.bytes()), acc[u])
				} else {
					zero(acc[u])
				}
			}
			p, n, vp := Load(Param("p"), GP64()), Load(Param("n"), GP64()), GP64()
			MOVQ(v, vp)
			Label(name + chunk + "_j")
			b := i.vec()
			VBROADCASTSS(mem(p, 0), b)
			for u := range acc {
				if kt.size == 4 {
					VFMADD231PS(mem(vp, u*i.bytes()), b, acc[u])
					continue
				}
				t := i.vec()
				kt.load(i, mem(vp, u*i.lanes*kt.size), t)
				VFMADD231PS(t, b, acc[u])
			}
			ADDQ(U32(4), p)
			ADDQ(stride, vp)
			DECQ(n)
			JNZ(LabelRef(name + chunk + "_j"))
			for u := range acc {
				VMOVUPS(acc[u], mem(out, u*i.bytes()))
			}
			ADDQ(U32(c*i.bytes()), out)
			ADDQ(U32(c*i.lanes*kt.size), v)
			SUBQ(U32(c*i.lanes), d)
			JMP(LabelRef(name + chunk))
		}
		Label(name + "ret")
		VZEROUPPER()
		RET()
	}
}
