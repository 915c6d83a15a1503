package kernels

import "unsafe"

// Attention over an int8 cache scores in integers.
//
// Each query head is quantized the way the cache quantizes a key
// (QuantizeInt8: codes qc, scale qs), so a score is one exact integer dot
// product of codes, scaled once:
//
//	s_j = (scale·qs) · float32(Σ_i qc_i·kc_j,i)
//
// and the key's own scale joins it before the softmax (probabilities).
// Integer sums are exact in any order, so the pure-Go loop, the AVX2
// kernel and the VNNI kernel (one instruction per 64 code pairs) give
// bitwise the same scores however the keys are blocked; the float work
// per score shrinks to two multiplications. The query's rounding adds an
// error of the size the key's own rounding already has: at most half a
// step of max|q|/127 per element.
//
// The weighted sum of the values stays in float32 (kvAttn[int8]'s sums),
// as for the other cache types.

// i8Dot computes integer scores for one implementation.
type i8Dot struct {
	// lanes: the vector kernel needs d to be a positive multiple of it;
	// 0 means pure Go.
	lanes int
	// vec sets s[j] = mult·float32(Σ_i q[i]·k[j*stride+i]) for j < n;
	// bias = 128·Σ_i q[i] (the VNNI kernel's correction).
	vec func(s *float32, q *int8, k *int8, n, d, stride int, mult float32, bias int32)
	// vecQ2 scores two query heads (codes d apart, scores sstride apart)
	// against the same keys, each bitwise what vec gives (nil: none).
	vecQ2 func(s *float32, sstride int, q *int8, k *int8, n, d, stride int, mult0, mult1 float32, bias0, bias1 int32)
}

// dot sets s[:n] to the scores of the query codes q against n keys.
func (x *i8Dot) dot(s []float32, q, k []int8, n, d, stride int, mult float32, bias int32) {
	if x.lanes > 0 && d > 0 && d%x.lanes == 0 {
		_, _, _ = s[n-1], q[d-1], k[(n-1)*stride+d-1]
		x.vec(&s[0], &q[0], &k[0], n, d, stride, mult, bias)
		return
	}
	i8DotGo(s, q, k, n, d, stride, mult)
}

// i8DotGo is the pure-Go integer score loop.
func i8DotGo(s []float32, q, k []int8, n, d, stride int, mult float32) {
	q = q[:d]
	for j := range n {
		kj := k[j*stride : j*stride+d]
		var acc int32
		for i, c := range q {
			acc += int32(c) * int32(kj[i])
		}
		s[j] = mult * float32(acc)
	}
}

// i8QueryFloats is the scratch (in float32 slots) that the quantized
// queries of m heads of d elements take: a multiplier and a bias per head
// and the codes.
func i8QueryFloats(m, d int) int { return 2*m + (m*d+3)/4 }

// quantizeQueries quantizes the rows' g query heads (head i = r·g+h at
// q[r*qstride+h*d:]) into codes[i*d:][:d], with mult[i] = scale·qs_i and
// bias[i] = offset·Σ codes (the offset that makes the keys' codes
// unsigned for VPDPBUSD: 128 for int8, 8 for 4-bit codes); it carves the
// three out of scratch, which holds i8QueryFloats(rows·g, d) floats.
func quantizeQueries(scratch, q []float32, qstride, rows, g, d int, scale float32, offset int32) (codes []int8, mult []float32, bias []int32) {
	M := rows * g
	mult = scratch[:M]
	bias = unsafe.Slice((*int32)(unsafe.Pointer(&scratch[M])), M)
	if d > 0 {
		cf := scratch[2*M : i8QueryFloats(M, d)]
		codes = unsafe.Slice((*int8)(unsafe.Pointer(&cf[0])), M*d)
	}
	for r := range rows {
		for h := range g {
			i := r*g + h
			c := codes[i*d : (i+1)*d]
			mult[i] = scale * QuantizeInt8(c, q[r*qstride+h*d:][:d])
			var sum int32
			for _, x := range c {
				sum += int32(x)
			}
			bias[i] = offset * sum
		}
	}
	return codes, mult, bias
}

// scoreQ2 is a two-head integer score kernel (i8Dot.vecQ2, i4Attn.dotQ2):
// the query codes of two heads d apart, their scores sstride apart.
type scoreQ2[T int8 | byte] func(s *float32, sstride int, q *int8, k *T, n, d, stride int, mult0, mult1 float32, bias0, bias1 int32)

// intScores fills S ([rows·g][nmax], nmax = n0+rows-1) with the integer
// scores of the rows' query heads (codes, mult, bias from quantizeQueries)
// against keys of kbytes elements of T, stride apart, in chunks of C keys
// that stay in L1 while every head of a row uses them; row r's heads score
// its n0+r positions. two (nil: none) scores pairs of a row's heads per
// key load, one the rest; each score is bitwise what one gives.
func intScores[T int8 | byte](S []float32, codes []int8, mult []float32, bias []int32, rows, g, n0, d int, k []T, kbytes, stride, C int,
	two scoreQ2[T], one func(s []float32, q []int8, k []T, n, d, stride int, mult float32, bias int32)) {
	nmax := n0 + rows - 1
	pairs := 0
	if two != nil {
		pairs = g / 2
	}
	for j0 := 0; j0 < nmax; j0 += C {
		for r := range rows {
			c := min(C, n0+r-j0)
			if c <= 0 {
				continue
			}
			chunkScores(S, nmax, j0, codes, mult, bias, r*g, g, pairs, d, k[j0*stride:], c, kbytes, stride, two, one)
		}
	}
}

// chunkScores scores query heads [i0, i0+g) (codes, mult, bias) against
// the c keys of kc into S[i*sstride+j0:], pairs of them through two and
// the rest through one: the chunk step of intScores and attendHeadsI8.
func chunkScores[T int8 | byte](S []float32, sstride, j0 int, codes []int8, mult []float32, bias []int32, i0, g, pairs, d int, kc []T, c, kbytes, stride int,
	two scoreQ2[T], one func(s []float32, q []int8, k []T, n, d, stride int, mult float32, bias int32)) {
	for i := i0; i < i0+2*pairs; i += 2 {
		_, _, _ = S[(i+1)*sstride+j0+c-1], codes[(i+2)*d-1], kc[(c-1)*stride+kbytes-1]
		two(&S[i*sstride+j0], sstride, &codes[i*d], &kc[0], c, d, stride, mult[i], mult[i+1], bias[i], bias[i+1])
	}
	for i := i0 + 2*pairs; i < i0+g; i++ {
		one(S[i*sstride+j0:], codes[i*d:(i+1)*d], kc, c, d, stride, mult[i], bias[i])
	}
}

// attendI8 is AttendBlockInt8 (AttendInt8 with rows = g = 1). Scratch:
// the scores (M·nmax, M = rows·g), the quantized queries, the outputs
// (M·d) — AttendBlockScratch's size.
func attendI8(im *impl, out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []int8, ks, vs []float32, n0, d, stride int, scale float32, scratch []float32) {
	M := rows * g
	nmax := n0 + rows - 1
	if nmax == 0 {
		clear(out[:d])
		return
	}
	S := scratch[:M*nmax]
	codes, mult, bias := quantizeQueries(scratch[M*nmax:], q, qstride, rows, g, d, scale, 128)
	x := &im.i8Dot
	var two scoreQ2[int8]
	if x.vecQ2 != nil && x.lanes > 0 && d%x.lanes == 0 {
		two = x.vecQ2
	}
	// Keys in chunks that stay in L1 while every query head uses them.
	intScores(S, codes, mult, bias, rows, g, n0, d, k, d, stride, chunkOf[int8](d), two, x.dot)
	for i := range M {
		probabilities(im, S[i*nmax:i*nmax+n0+i/g], ks, vs)
	}
	a := &im.i8KV
	if a.sumQ4 != nil && a.vec(d) && d%64 == 0 && M >= 4 {
		ob := M*nmax + i8QueryFloats(M, d)
		blockSums(a, out, ostride, S, rows, g, v, n0, d, stride, scratch[ob:ob+M*d])
		return
	}
	for r := range rows {
		groupSums(a, out[r*ostride:], S[r*g*nmax:], nmax, g, v, n0+r, d, stride)
	}
}

// attendHeadsI8 is attendI8 for one row over several key/value heads, as
// attendHeadsKV is for bfloat16: head h's g queries at q[h*g*d:], outputs
// at out[h*g*d:], codes k[h] and v[h] (stride d) with scales ks[h] and
// vs[h]; the heads' chunks of keys (then values) take turns with the next
// turn's prefetched, so a core reads two streams. Each head's output is
// bitwise what attendI8 gives it alone. Scratch: H·g·n scores, then the
// quantized queries (i8QueryFloats(H·g, d)).
func attendHeadsI8(im *impl, out, q []float32, g int, k, v [][]int8, ks, vs [][]float32, n, d int, scale float32, scratch []float32) {
	H := len(k)
	M := H * g
	S := scratch[:M*n]
	// The heads' query groups are consecutive, so they quantize as H rows
	// of g heads each.
	codes, mult, bias := quantizeQueries(scratch[M*n:], q, g*d, H, g, d, scale, 128)
	x := &im.i8Dot
	var two scoreQ2[int8]
	if x.vecQ2 != nil && x.lanes > 0 && d%x.lanes == 0 {
		two = x.vecQ2
	}
	pairs := 0
	if two != nil {
		pairs = g / 2
	}
	one := x.dot
	C := chunkOf[int8](d)
	for j0 := 0; j0 < n; j0 += C {
		c := min(C, n-j0)
		for h := range H {
			if H > 1 {
				prefetchNextTurn(k, h, j0, C, n, d, d)
			}
			chunkScores(S, n, j0, codes, mult, bias, h*g, g, pairs, d, k[h][j0*d:], c, d, d, two, one)
		}
	}
	for i := range M {
		probabilities(im, S[i*n:(i+1)*n], ks[i/g], vs[i/g])
	}
	headSums(&im.i8KV, out, S, n, g, v, n, d, d)
}
