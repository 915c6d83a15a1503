package main

import (
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// weightType is a storage type of matrix weights.
type weightType struct {
	name  string // F32, BF16, F16
	gotyp string // Go element type
	size  int    // bytes per weight
	// load widens one vector's worth of weights at m into v (float32).
	load func(i isa, m Mem, v VecVirtual)
	// goWiden is the Go expression for the stub comment.
	goWiden string
}

var weightTypes = []weightType{
	{
		name: "F32", gotyp: "float32", size: 4, goWiden: "w[i]",
		load: func(i isa, m Mem, v VecVirtual) { VMOVUPS(m, v) },
	},
	{
		// bfloat16 is the top half of a float32: zero-extend and shift.
		name: "BF16", gotyp: "uint16", size: 2, goWiden: "math.Float32frombits(uint32(w[i])<<16)",
		load: func(i isa, m Mem, v VecVirtual) {
			VPMOVZXWD(m, v)
			VPSLLD(U8(16), v, v)
		},
	},
	{
		name: "F16", gotyp: "uint16", size: 2, goWiden: "float16 w[i] widened",
		load: func(i isa, m Mem, v VecVirtual) { VCVTPH2PS(m, v) },
	},
}

// ptrs addresses up to four rows of a matrix from two advancing pointers:
// row 0 at p0, rows 1 and 2 at p0+stride and p0+2*stride, row 3 at p3.
type ptrs struct {
	p0, p3 GPVirtual
	stride Register // bytes between rows
	n      int
}

func newPtrs(base Register, stride Register, n int) ptrs {
	p := ptrs{p0: GP64(), stride: stride, n: n}
	MOVQ(base, p.p0)
	if n == 4 {
		p.p3 = GP64()
		LEAQ(Mem{Base: p.p0, Index: stride, Scale: 2}, p.p3)
		ADDQ(stride, p.p3)
	}
	return p
}

func (p ptrs) at(r int) Mem {
	switch r {
	case 0:
		return mem(p.p0, 0)
	case 3:
		return mem(p.p3, 0)
	default:
		return Mem{Base: p.p0, Index: p.stride, Scale: uint8(r)}
	}
}

func (p ptrs) advance(bytes int) {
	ADDQ(U32(bytes), p.p0)
	if p.n == 4 {
		ADDQ(U32(bytes), p.p3)
	}
}

// tile emits the K loop and the stores for an xp.n tokens × wp.n rows block
// of outputs; both pointer sets advance by one vector per step, kk (loaded
// from the frame) counts inputs. Each (t, r) owns one accumulator that sums
// lane j of x·w over k ≡ j (mod lanes) in increasing k, then goes through
// isa.reduce; dst(t, r) gives the output address, evaluated after the loop.
func tile(i isa, wt weightType, xp, wp ptrs, dst func(t, r int) Mem, name string) {
	tokens, rows := xp.n, wp.n
	acc := make([][]VecVirtual, tokens)
	for t := range acc {
		acc[t] = make([]VecVirtual, rows)
		for r := range acc[t] {
			acc[t][r] = i.vec()
			zero(acc[t][r])
		}
	}
	n := Load(Param("kk"), GP64())
	loop, done := name+"_loop", name+"_done"
	TESTQ(n, n)
	JZ(LabelRef(done))
	Label(loop)
	if tokens == 1 && wt.name == "F32" {
		// One token: weights straight from memory into the FMA.
		xv := i.vec()
		VMOVUPS(xp.at(0), xv)
		for r := range rows {
			VFMADD231PS(wp.at(r), xv, acc[0][r])
		}
	} else {
		xv := make([]VecVirtual, tokens)
		for t := range xv {
			xv[t] = i.vec()
			VMOVUPS(xp.at(t), xv[t])
		}
		for r := range rows {
			wv := i.vec()
			wt.load(i, wp.at(r), wv)
			for t := range tokens {
				VFMADD231PS(wv, xv[t], acc[t][r])
			}
		}
	}
	xp.advance(i.bytes())
	wp.advance(i.lanes * wt.size)
	SUBQ(U32(i.lanes), n)
	JNZ(LabelRef(loop))
	Label(done)
	for t := range tokens {
		for r := range rows {
			s := i.reduce(acc[t][r])
			VMOVSS(s, dst(t, r))
		}
	}
}

func funcName(kind string, i isa, wt weightType) string {
	return fmt.Sprintf("%s%s%s", kind, wt.name, i.name)
}

// gemv emits dst[r] = x[:kk]·w[r*ldw:][:kk] for r < rows. Its tiles of
// gemvRows rows take rows rstep apart (rstep = rows/gemvRows): row j,
// j+rstep, …, so that each of a tile's rows starts a stream that runs on
// through the next rstep rows (rows are contiguous in memory) instead of
// ending after one row of a few KiB, and a core keeps a stream's worth of
// lines in flight for each. The rows past gemvRows·rstep go one at a time.
func gemv(i isa, wt weightType) {
	name := funcName("gemv", i, wt)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst, x *float32, w *%s, kk, rows, ldw int)", wt.gotyp))
	l := fmt.Sprint(i.lanes)
	Doc(
		fmt.Sprintf("%s computes one token against rows of a weight matrix; kk is a multiple of %d.", name, i.lanes),
		fmt.Sprintf("A tile's %d rows are rows/%d apart; the outputs are those of the loop:", i.gemvRows, i.gemvRows),
		"",
		"\tfor r := 0; r < rows; r++ {",
		"\t\tvar acc ["+l+"]float32",
		"\t\tfor k := 0; k < kk; k++ {",
		"\t\t\tacc[k%"+l+"] = fma(x[k], w(r*ldw+k), acc[k%"+l+"])",
		"\t\t}",
		"\t\tdst[r] = reduce(acc) // halves, then (l0+l2)+(l1+l3)",
		"\t}",
		"",
		"where w(i) is "+wt.goWiden+".",
	)
	dst := Load(Param("dst"), GP64())
	w := Load(Param("w"), GP64())
	rows := Load(Param("rows"), GP64())
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(log2(wt.size)), ldw) // row stride in bytes
	rstep := rowStep(rows, i.gemvRows)

	for _, R := range []int{i.gemvRows, 1} {
		group := fmt.Sprintf("rows%d", R)
		next := "ret"
		if R > 1 {
			next = "rows1"
		}
		end := next
		if R > 1 {
			end = group + "_end"
		}
		Label(group)
		CMPQ(rows, U32(R))
		JL(LabelRef(end))
		x := Load(Param("x"), GP64())
		out := spacedOut{rstep: rstep}
		tile(i, wt, newPtrs(x, nil, 1), newPtrs(w, rowSpacing(R, rstep, ldw), R), func(t, r int) Mem { return out.at(dst, r) }, group)
		ADDQ(U32(4), dst)
		ADDQ(ldw, w)
		SUBQ(U32(R), rows)
		JMP(LabelRef(group))
		if R > 1 {
			Label(end)
			skipSpacedRows(rstep, R, ldw, w, dst)
		}
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

// rowSpacing is the bytes between a tile's R rows: ldw·rstep when they
// are spaced (R > 1), else ldw.
func rowSpacing(R int, rstep Mem, ldw Register) Register {
	if R == 1 {
		return ldw
	}
	s := GP64()
	MOVQ(rstep, s)
	IMULQ(ldw, s)
	return s
}

// spacedOut addresses the outputs of a tile whose rows are rstep apart:
// row r's float32 is 4·r·rstep bytes past the row-0 output. It is used
// after the tile's loop, when the weight pointers' registers are free.
type spacedOut struct {
	rstep Mem
	step  Register // 4·rstep, loaded at the first use
}

func (o *spacedOut) at(base Register, r int) Mem {
	if r == 0 {
		return mem(base, 0)
	}
	if o.step == nil {
		o.step = GP64()
		MOVQ(o.rstep, o.step)
		SHLQ(U8(2), o.step)
	}
	p := GP64()
	IMUL3Q(U32(r), o.step, p)
	ADDQ(base, p)
	return mem(p, 0)
}

// skipSpacedRows moves w (rows ldw bytes apart) and dst (a float32 per
// row) on from row rstep, where tiles of R rows rstep apart left them
// after taking rows [0, R·rstep), to row R·rstep.
func skipSpacedRows(rstep Mem, R int, ldw, w, dst Register) {
	skip := GP64()
	MOVQ(rstep, skip)
	IMUL3Q(U32(R-1), skip, skip)
	wskip := GP64()
	MOVQ(skip, wskip)
	IMULQ(ldw, wskip)
	ADDQ(wskip, w)
	SHLQ(U8(2), skip)
	ADDQ(skip, dst)
}

// rowStep keeps rows/R, the spacing of a tile's R rows, in the frame.
func rowStep(rows Register, R int) Mem {
	m := AllocLocal(8)
	q := GP64()
	MOVQ(rows, q)
	SHRQ(U8(log2(R)), q)
	MOVQ(q, m)
	return m
}

// gemm4 emits the 4-token version of gemv: token t's activations at
// x[t*ldx:], its outputs at dst[t*ldd:]. Its tiles of gemmRows rows take
// rows rstep apart, as gemv's do.
func gemm4(i isa, wt weightType) { gemmTokens(i, wt, 4, i.gemmRows) }

// gemm2 is gemm4 for 2 tokens, with gemv's row tile: two streams' steps
// read the weights once, where two gemv calls read them twice.
func gemm2(i isa, wt weightType) { gemmTokens(i, wt, 2, i.gemvRows) }

// gemmTokens emits the kernel for tokens (2 or 4) at once, register tiles
// of tokens × R0 rows, the R0 rows rows/R0 apart.
func gemmTokens(i isa, wt weightType, tokens, R0 int) {
	name := funcName(fmt.Sprintf("gemm%d", tokens), i, wt)
	TEXT(name, NOSPLIT, fmt.Sprintf("func(dst *float32, ldd int, x *float32, ldx int, w *%s, kk, rows, ldw int)", wt.gotyp))
	Doc(
		fmt.Sprintf("%s is %s for %d tokens at once, reusing each weight", name, funcName("gemv", i, wt), tokens),
		fmt.Sprintf("vector for all of them (register tile: %d tokens × %d rows, rows/%d apart).", tokens, R0, R0),
		"",
		fmt.Sprintf("\tfor t := 0; t < %d; t++ {", tokens),
		"\t\t"+funcName("gemv", i, wt)+"(&dst[t*ldd], &x[t*ldx], w, kk, rows, ldw)",
		"\t}",
	)
	dst := Load(Param("dst"), GP64())
	ldd := Load(Param("ldd"), GP64())
	w := Load(Param("w"), GP64())
	rows := Load(Param("rows"), GP64())
	ldw := Load(Param("ldw"), GP64())
	SHLQ(U8(2), ldd)
	SHLQ(U8(log2(wt.size)), ldw)
	rstep := rowStep(rows, R0)

	for _, R := range []int{R0, 1} {
		group := fmt.Sprintf("rows%d", R)
		next := "ret"
		if R > 1 {
			next = "rows1"
		}
		Label(group)
		CMPQ(rows, U32(R))
		end := next
		if R > 1 {
			end = group + "_end"
		}
		JL(LabelRef(end))
		x := Load(Param("x"), GP64())
		ldx := Load(Param("ldx"), GP64())
		SHLQ(U8(2), ldx)
		xp := newPtrs(x, ldx, tokens)
		wp := newPtrs(w, rowSpacing(R, rstep, ldw), R)
		// Token t's output of the tile's row r is at dst + t·ldd +
		// 4·r·rstep; the pointers are computed after the loop, when x's
		// and w's are dead.
		var rowBase Register
		lastT := -1
		out := spacedOut{rstep: rstep}
		tile(i, wt, xp, wp, func(t, r int) Mem {
			if t != lastT {
				lastT = t
				rowBase = dst
				if t > 0 {
					rowBase = GP64()
					IMUL3Q(U32(t), ldd, rowBase)
					ADDQ(dst, rowBase)
				}
			}
			return out.at(rowBase, r)
		}, group)
		ADDQ(U32(4), dst)
		ADDQ(ldw, w)
		SUBQ(U32(R), rows)
		JMP(LabelRef(group))
		if R > 1 {
			Label(end)
			skipSpacedRows(rstep, R, ldw, w, dst)
		}
	}
	Label("ret")
	VZEROUPPER()
	RET()
}

func log2(n int) int {
	l := 0
	for 1<<l < n {
		l++
	}
	return l
}
