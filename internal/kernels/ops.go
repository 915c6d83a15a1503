package kernels

import "fmt"

// Dot returns Σ a[i]·b[i] accumulated in float32; len(b) >= len(a).
func Dot(a, b []float32) float32 {
	if len(b) < len(a) {
		panic(fmt.Sprintf("kernels: Dot with len(b)=%d < len(a)=%d", len(b), len(a)))
	}
	return active.dot(a, b[:len(a)])
}

// Axpy computes y[i] += alpha·x[i] for i < len(x); len(y) >= len(x).
func Axpy(alpha float32, x, y []float32) {
	if len(y) < len(x) {
		panic(fmt.Sprintf("kernels: Axpy with len(y)=%d < len(x)=%d", len(y), len(x)))
	}
	active.axpy(alpha, x, y[:len(x)])
}

// F16ToF32 widens the IEEE binary16 values src into dst (len(dst) >=
// len(src)); exact, as half.F16SliceToF32, which it replaces where a
// step needs it: that one looks each value up in a 256 KiB table, which
// the step's weight reads have evicted by the time a token's embedding row
// is widened.
func F16ToF32(dst []float32, src []uint16) { active.f16ToF32(dst[:len(src)], src) }

// RMSNorm computes dst = x·rsqrt(mean(x²)+eps)·w as Hugging Face's
// Qwen3RMSNorm does in float32. dst may alias x.
func RMSNorm(dst, x, w []float32, eps float32) {
	if len(dst) < len(x) || len(w) < len(x) {
		panic(fmt.Sprintf("kernels: RMSNorm with len(x)=%d, len(dst)=%d, len(w)=%d", len(x), len(dst), len(w)))
	}
	if len(x) == 0 {
		return
	}
	active.rmsNorm(dst[:len(x)], x, w[:len(x)], eps)
}

// SiLUMul computes dst[i] = gate[i]·sigmoid(gate[i])·up[i] for i < len(dst).
// dst may alias gate or up.
func SiLUMul(dst, gate, up []float32) {
	if len(gate) < len(dst) || len(up) < len(dst) {
		panic(fmt.Sprintf("kernels: SiLUMul with len(dst)=%d, len(gate)=%d, len(up)=%d", len(dst), len(gate), len(up)))
	}
	active.siluMul(dst, gate[:len(dst)], up[:len(dst)])
}

// Softmax replaces x with exp(x-max)/Σexp(x-max).
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	active.softmax(x)
}

// RoPE rotates one head in place, NeoX style (rotate_half): with
// half = len(x)/2, for i < half, (x[i], x[i+half]) becomes
// (x[i]·cos[i] − x[i+half]·sin[i], x[i+half]·cos[i] + x[i]·sin[i]).
func RoPE(x []float32, cos, sin []float32) {
	half := len(x) / 2
	if len(cos) < half || len(sin) < half {
		panic(fmt.Sprintf("kernels: RoPE on %d values with len(cos)=%d, len(sin)=%d", len(x), len(cos), len(sin)))
	}
	active.rope(x, cos[:half], sin[:half])
}

// Attend computes one query head over n cached positions:
// out = Σ_j softmax_j(scale·q·k_j)·v_j with k_j = k[j*stride:][:d] and v_j
// likewise. scratch holds at least n floats. With n = 0, out is zeroed.
func Attend(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	if n < 0 || d < 0 || len(out) < d || len(q) < d || len(scratch) < n {
		panic(fmt.Sprintf("kernels: Attend n=%d d=%d with len(out)=%d, len(q)=%d, len(scratch)=%d", n, d, len(out), len(q), len(scratch)))
	}
	if n > 0 {
		need := (n-1)*stride + d
		if stride < d || len(k) < need || len(v) < need {
			panic(fmt.Sprintf("kernels: Attend n=%d d=%d stride=%d needs k and v of %d; have %d, %d", n, d, stride, need, len(k), len(v)))
		}
	}
	active.attend(out[:d], q[:d], k, v, n, d, stride, scale, scratch[:n])
}

// attnChunkBytes bounds the keys (or values) one chunk of AttendGroup
// visits: well inside a 32 KiB L1 data cache, with room for the queries
// and outputs.
const attnChunkBytes = 16 << 10

// AttendGroup is Attend for g query heads that share one key/value head
// (grouped-query attention): head i reads q[i*d:][:d] and writes
// out[i*d:][:d]; scratch holds at least g·n floats. Keys and values are
// visited in chunks small enough to stay in the L1 cache while every head
// of the group uses them, so the cache is read from memory once per group
// instead of once per head. Each head's output is bitwise what Attend
// computes for it.
func AttendGroup(out, q []float32, g int, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	if g <= 0 || n < 0 || d < 0 || len(out) < g*d || len(q) < g*d || len(scratch) < g*n {
		panic(fmt.Sprintf("kernels: AttendGroup g=%d n=%d d=%d with len(out)=%d, len(q)=%d, len(scratch)=%d", g, n, d, len(out), len(q), len(scratch)))
	}
	if n > 0 {
		need := (n-1)*stride + d
		if stride < d || len(k) < need || len(v) < need {
			panic(fmt.Sprintf("kernels: AttendGroup n=%d d=%d stride=%d needs k and v of %d; have %d, %d", n, d, stride, need, len(k), len(v)))
		}
	}
	active.attendGroup(out[:g*d], q[:g*d], g, k, v, n, d, stride, scale, scratch[:g*n])
}

// AttendBlock is AttendGroup for rows consecutive positions of one
// sequence (a prompt being prefilled): row r's g query heads are
// q[r*qstride+i*d:][:d], its outputs out[r*ostride+i*d:][:d], and row r attends to
// the first n0+r cached positions (n0 >= 1). Blocking the rows lets every
// key and value read serve all of them; each head's output is still
// bitwise what Attend computes for it, so a row's result does not depend
// on the rows it was blocked with. scratch holds at least
// AttendBlockScratch(rows, g, n0, d) floats.
func AttendBlock(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []float32, n0, d, stride int, scale float32, scratch []float32) {
	if rows <= 0 || g <= 0 || n0 <= 0 || d < 0 || qstride < g*d || ostride < g*d {
		panic(fmt.Sprintf("kernels: AttendBlock rows=%d g=%d n0=%d d=%d qstride=%d ostride=%d", rows, g, n0, d, qstride, ostride))
	}
	need := (n0+rows-2)*stride + d
	if len(out) < (rows-1)*ostride+g*d || len(q) < (rows-1)*qstride+g*d || len(scratch) < AttendBlockScratch(rows, g, n0, d) || stride < d || len(k) < need || len(v) < need {
		panic(fmt.Sprintf("kernels: AttendBlock rows=%d g=%d n0=%d d=%d stride=%d: have out %d, q %d, k %d, v %d, scratch %d", rows, g, n0, d, stride, len(out), len(q), len(k), len(v), len(scratch)))
	}
	if active.attendBlock != nil {
		active.attendBlock(out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
		return
	}
	attendBlockLoop(out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
}

// AttendBlockScratch is the scratch AttendBlock (and AttendBlockBF16,
// AttendBlockInt8) needs: every query's scores, a copy of the block's
// queries (for int8, their codes, multipliers and biases) and outputs.
func AttendBlockScratch(rows, g, n0, d int) int {
	m := rows * g
	return m*(n0+rows-1) + 2*m*d + 2*m
}

// attendBlockLoop runs AttendBlock row by row.
func attendBlockLoop(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []float32, n0, d, stride int, scale float32, scratch []float32) {
	for r := range rows {
		n := n0 + r
		o, i := r*ostride, r*qstride
		active.attendGroup(out[o:o+g*d], q[i:i+g*d], g, k, v, n, d, stride, scale, scratch[:g*n])
	}
}

// attendGroupLoop runs attend head by head, for implementations without a
// chunked form.
func attendGroupLoop(attend func(out, q, k, v []float32, n, d, stride int, scale float32, scratch []float32)) func(out, q []float32, g int, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
	return func(out, q []float32, g int, k, v []float32, n, d, stride int, scale float32, scratch []float32) {
		for i := range g {
			attend(out[i*d:(i+1)*d], q[i*d:(i+1)*d], k, v, n, d, stride, scale, scratch[i*n:(i+1)*n])
		}
	}
}
