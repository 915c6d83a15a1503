package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// Attention over a 4-bit cache (its format: kvint4.go).
//
// Attention rotates what meets the cache instead of unrotating the cache:
// q·k = (R·q)·(R·k), so each query head is rotated and quantized like a
// key (to int8 codes, as for the int8 cache: attend_i8.go) and its scores
// are exact integer dot products; and Σ_j p_j·v_j = Rᵀ·Σ_j p_j·(R·v_j),
// so the weighted sum runs over the rotated codes and its result is
// rotated back once per head. Rotating costs d·log2(d) additions per head
// vector, against n·d work per head for the attention itself.

// i4Attn is one implementation's attention kernels over a 4-bit cache
// (nil where there are none; the pure-Go loops run instead).
type i4Attn struct {
	// dot sets s[j] = mult·float32(Σ_i q[i]·c_j,i) for j < n, the codes of
	// key j at k[j*stride:], bias = 8·Σ_i q[i]; d a multiple of dotLanes.
	dotLanes int
	dot      func(s *float32, q *int8, k *byte, n, d, stride int, mult float32, bias int32)
	// dotQ2 scores two query heads (codes d apart, scores sstride apart)
	// against the same keys, bitwise what dot gives each.
	dotQ2 func(s *float32, sstride int, q *int8, k *byte, n, d, stride int, mult0, mult1 float32, bias0, bias1 int32)
	// sum (sumAdd) sets (adds to) out[:d] Σ_j p[j]·c_j over j < n in
	// increasing j, n > 0, in float32; d a multiple of sumLanes. They
	// serve CPUs without the integer sums below, and rows whose weights
	// are not finite.
	sumLanes    int
	sum, sumAdd func(out, p *float32, v *byte, n, d, stride int)
	// rotate and unrotate are RotateInt4 and UnrotateInt4 for d ≥ 16,
	// bitwise what the pure-Go loops give (sign: rotSigns, tab:
	// hadamardSigns).
	rotate, unrotate func(x *float32, d int, sign *float32, scale float32, tab *float32)
	// The integer sums (nil where there are none; d a multiple of 32):
	// sumW16 and sumW16Q2 (one or two queries, weights wstride apart)
	// set out to scale·float32(Σ_j w_j·c_j) or, the Add forms, add it;
	// maxSum and toW16 turn a chunk of weights into the int16 w.
	sumW16, sumAddW16, sumW16Q2, sumAddW16Q2 func(out *float32, w *int16, wstride int, v *byte, n, d, stride int, scale0, scale1 float32)
	maxSum                                   func(a *float32, n int) (max, sum float32)
	// codes is QuantizeInt4's packing (d a multiple of 32), bitwise the
	// pure-Go loop.
	codes func(dst *byte, y *float32, d int, inv float32)
	toW16 func(w *int16, a *float32, n int, inv float32)
}

// dotN sets s[:n] to the scores of the query codes q against n keys.
func (a *i4Attn) dotN(s []float32, q []int8, k []byte, n, d, stride int, mult float32, bias int32) {
	if a.dot != nil && d%a.dotLanes == 0 {
		_, _, _ = s[n-1], q[d-1], k[(n-1)*stride+d/2-1]
		a.dot(&s[0], &q[0], &k[0], n, d, stride, mult, bias)
		return
	}
	i4DotGo(s, q, k, n, d, stride, mult)
}

// sumN sets (add: adds to) out[:d] the sum over the first n values; n > 0.
func (a *i4Attn) sumN(out, p []float32, v []byte, n, d, stride int, add bool) {
	if a.sum != nil && d%a.sumLanes == 0 {
		_, _, _ = out[d-1], p[n-1], v[(n-1)*stride+d/2-1]
		f := a.sum
		if add {
			f = a.sumAdd
		}
		f(&out[0], &p[0], &v[0], n, d, stride)
		return
	}
	sumI4Go(out, p, v, n, d, stride, add)
}

// i4DotGo is the pure-Go integer score loop.
func i4DotGo(s []float32, q []int8, k []byte, n, d, stride int, mult float32) {
	h := d / 2
	ql, qh := q[:h], q[h:d]
	for j := range n {
		kj := k[j*stride : j*stride+h]
		var acc int32
		for i, b := range kj {
			acc += int32(ql[i])*lo4(b) + int32(qh[i])*hi4(b)
		}
		s[j] = mult * float32(acc)
	}
}

// sumI4Go is the pure-Go weighted sum of 4-bit codes.
func sumI4Go(out, p []float32, v []byte, n, d, stride int, add bool) {
	h := d / 2
	out = out[:d]
	if !add {
		clear(out)
	}
	ol, oh := out[:h], out[h:]
	for j, pj := range p[:n] {
		vj := v[j*stride : j*stride+h]
		for i, b := range vj {
			ol[i] += pj * float32(lo4(b))
			oh[i] += pj * float32(hi4(b))
		}
	}
}

// attendI4 is AttendBlockInt4. Scratch: the scores (M·nmax, M =
// rows·g), the quantized queries (i8QueryFloats) and the rotated queries
// (M·d): within AttendBlockScratch.
func attendI4(im *impl, out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []byte, ks, vs []float32, n0, d, stride int, scale float32, scratch []float32) {
	M := rows * g
	nmax := n0 + rows - 1
	S := scratch[:M*nmax]
	qo := M*nmax + i8QueryFloats(M, d)
	Qr := scratch[qo : qo+M*d]
	for r := range rows {
		copy(Qr[r*g*d:(r+1)*g*d], q[r*qstride:r*qstride+g*d])
	}
	a := &im.i4KV
	for i := range M {
		a.rotateN(Qr[i*d : (i+1)*d])
	}
	codes, mult, bias := quantizeQueries(scratch[M*nmax:], Qr, g*d, rows, g, d, scale, 8)
	var two scoreQ2[byte]
	if a.dotQ2 != nil && d%a.dotLanes == 0 {
		two = a.dotQ2
	}
	// Keys (d/2 bytes each) in chunks that stay in L1 while every query
	// head uses them.
	C := chunkOf[byte](d / 2)
	intScores(S, codes, mult, bias, rows, g, n0, d, k, d/2, stride, C, two, a.dotN)
	for i := range M {
		probabilities(im, S[i*nmax:i*nmax+n0+i/g], ks, vs)
	}
	for r := range rows {
		n := n0 + r
		o, p := out[r*ostride:r*ostride+g*d], S[r*g*nmax:]
		if a.sumW16Q2 == nil || d%32 != 0 || !sumsW16(a, o, p, nmax, g, v, n, d, stride) {
			for j0 := 0; j0 < n; j0 += C {
				c := min(C, n-j0)
				for i := range g {
					a.sumN(o[i*d:], p[i*nmax+j0:], v[j0*stride:], c, d, stride, j0 > 0)
				}
			}
		}
		for i := range g {
			a.unrotateN(o[i*d : (i+1)*d])
		}
	}
}

// w16Chunk is how many positions' weights one 16-bit scale covers: small
// enough that a chunk's int32 sums cannot overflow (1024 positions ·
// 32767 · 8 < 2³¹), large enough that converting them costs little.
const w16Chunk = 1024

// sumsW16 computes the weighted sums of one row's g heads (weights p,
// rows nmax apart, n positions) in integers: each chunk of w16Chunk
// positions of a head's weights is rounded to 16 bits relative to the
// chunk's largest, w = round(a·32767/amax), in place over p, and summed
// exactly against the codes; the chunk's sum joins out as
// (amax/32767)·float32(Σ w·c). The rounding moves a weight by at most
// amax/65534, far below the 4-bit codes' own error. Pairs of heads share
// each load of the values. It reports false, changing nothing, when a
// weight is not finite (a NaN or an infinity in the cache or the query),
// so that the float sums carry it to the output.
func sumsW16(a *i4Attn, out, p []float32, nmax, g int, v []byte, n, d, stride int) bool {
	chunks := (n + w16Chunk - 1) / w16Chunk
	var buf [256]float32 // 64k positions of four heads without allocating
	sc := buf[:0]
	if g*chunks > len(buf) {
		sc = make([]float32, 0, g*chunks)
	}
	for i := range g {
		for j0 := 0; j0 < n; j0 += w16Chunk {
			m, ok := maxSumW(a, p[i*nmax+j0:i*nmax+min(n, j0+w16Chunk)])
			if !ok {
				return false
			}
			sc = append(sc, m)
		}
	}
	w := unsafe.Slice((*int16)(unsafe.Pointer(&p[0])), 2*((g-1)*nmax+n))
	for i := range g {
		for c := range chunks {
			j0 := c * w16Chunk
			amax := &sc[i*chunks+c]
			var inv float32
			if *amax > 0 {
				// A chunk far from the softmax's peak can hold weights
				// so small that 32767/amax overflows; the largest finite
				// factor still maps them to codes (0 for the smallest)
				// and never makes 0·∞.
				inv = min(32767 / *amax, math.MaxFloat32)
			}
			toW16(a, w[2*i*nmax+j0:], p[i*nmax+j0:i*nmax+min(n, j0+w16Chunk)], inv)
			*amax /= 32767
		}
	}
	_ = v[(n-1)*stride+d/2-1]
	for i := 0; i < g; {
		q := min(2, g-i)
		for c := range chunks {
			j0 := c * w16Chunk
			m := min(w16Chunk, n-j0)
			f := a.sumW16Q2
			switch {
			case q == 1 && c == 0:
				f = a.sumW16
			case q == 1:
				f = a.sumAddW16
			case c > 0:
				f = a.sumAddW16Q2
			}
			s1 := sc[i*chunks+c]
			if q == 2 {
				s1 = sc[(i+1)*chunks+c]
			}
			_ = out[(i+q)*d-1]
			f(&out[i*d], &w[2*i*nmax+j0], 2*nmax, &v[j0*stride], m, d, stride, sc[i*chunks+c], s1)
		}
		i += q
	}
	return true
}

// maxSumW returns the largest of the weights p and whether all are finite.
func maxSumW(a *i4Attn, p []float32) (amax float32, finite bool) {
	n16 := len(p) &^ 15
	var s float32
	if n16 > 0 {
		amax, s = a.maxSum(&p[0], n16)
	}
	for _, x := range p[n16:] {
		amax = max(amax, x)
		s += x
	}
	return amax, !math.IsNaN(float64(s)) && !math.IsInf(float64(s), 0)
}

// toW16 sets w[j] = round_half_even(p[j]·inv) for j < len(p); w may
// overlap p at or below it (each weight is read before its slot, or a
// later one's, is written).
func toW16(a *i4Attn, w []int16, p []float32, inv float32) {
	n16 := len(p) &^ 15
	if n16 > 0 {
		_ = w[n16-1]
		a.toW16(&w[0], &p[0], n16, inv)
	}
	for j := n16; j < len(p); j++ {
		w[j] = int16(min(32767, roundEven(p[j]*inv)))
	}
}

// AttendInt4 is Attend over a 4-bit cache (see QuantizeInt4): key j is
// the rotated codes k[j*stride:][:d/2] with scale ks[j], value j likewise
// with vs[j]; stride is in bytes (at least d/2). The query is rotated and
// quantized to int8 codes (scale qs); the scores are ks[j]·((scale·qs)·
// (qc·c_j)), the dot product in integers, and the output is Rᵀ·Σ_j (p_j·
// vs[j])·c_j. d must be a power of two from 2 to 1024. It allocates when
// scratch holds fewer than AttendBlockScratch(1, 1, n, d) floats.
func AttendInt4(out, q []float32, k, v []byte, ks, vs []float32, n, d, stride int, scale float32, scratch []float32) {
	checkInt4Dim("AttendInt4", d)
	if n < 0 || len(out) < d || len(q) < d {
		panic(fmt.Sprintf("kernels: AttendInt4 n=%d d=%d with len(out)=%d, len(q)=%d", n, d, len(out), len(q)))
	}
	if n == 0 {
		clear(out[:d])
		return
	}
	checkInt4KV("AttendInt4", len(k), len(v), n, d, stride)
	checkScales("AttendInt4", ks, vs, n)
	if need := AttendBlockScratch(1, 1, n, d); len(scratch) < need {
		scratch = make([]float32, need)
	}
	attendI4(active, out, d, q, d, 1, 1, k, v, ks, vs, n, d, stride, scale, scratch)
}

// AttendBlockInt4 is AttendBlock over a 4-bit cache (see AttendInt4;
// stride in bytes); every head's output is bitwise what AttendInt4
// computes for it.
func AttendBlockInt4(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []byte, ks, vs []float32, n0, d, stride int, scale float32, scratch []float32) {
	checkInt4Dim("AttendBlockInt4", d)
	if rows <= 0 || g <= 0 || n0 <= 0 || qstride < g*d || ostride < g*d ||
		len(out) < (rows-1)*ostride+g*d || len(q) < (rows-1)*qstride+g*d || len(scratch) < AttendBlockScratch(rows, g, n0, d) {
		panic(fmt.Sprintf("kernels: AttendBlockInt4 rows=%d g=%d n0=%d d=%d qstride=%d ostride=%d: have out %d, q %d, scratch %d",
			rows, g, n0, d, qstride, ostride, len(out), len(q), len(scratch)))
	}
	checkInt4KV("AttendBlockInt4", len(k), len(v), n0+rows-1, d, stride)
	checkScales("AttendBlockInt4", ks, vs, n0+rows-1)
	attendI4(active, out, ostride, q, qstride, rows, g, k, v, ks, vs, n0, d, stride, scale, scratch)
}

func checkInt4KV(name string, lk, lv, n, d, stride int) {
	need := (n-1)*stride + d/2
	if stride < d/2 || lk < need || lv < need {
		panic(fmt.Sprintf("kernels: %s n=%d d=%d stride=%d needs k and v of %d bytes; have %d, %d", name, n, d, stride, need, lk, lv))
	}
}
