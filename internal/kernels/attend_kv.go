package kernels

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/streamguard/streamguard/internal/half"
)

// Attention over narrower KV caches.
//
// A bfloat16 cache holds each key and value element as the top half of a
// float32 (round to nearest even on the way in); the kernels widen it
// exactly as they load it, so from there they run exactly the float32
// kernels' operations: attention over a bfloat16 cache is bitwise what
// Attend computes over the widened float32 values.
//
// An int8 cache holds each key (and value) vector of one head at one
// position as 127-step symmetric codes c with one float32 scale s
// (element ≈ s·c, see QuantizeInt8). The scores are integer dot products
// of the keys' codes with the query's own int8 codes (attend_i8.go); a
// key's scale multiplies its score after the dot product and a value's
// scale multiplies its softmax probability before the weighted sum
// (Σ_j (p_j·vs_j)·c_j), whose inner loop converts the codes exactly.

// kvAttn is one implementation's attention loops over a cache of element
// type T.
type kvAttn[T float32 | uint16 | int8] struct {
	// lanes is the vector width: the assembly loops below need d to be a
	// positive multiple of it. 0 means there are none (pure Go).
	lanes int
	// scores sets s[j] = scale·(q·k_j) for j < n (nil for int8, whose
	// scores are integers: i8Dot); sum (sumAdd) sets (adds to) out[:d]
	// Σ_j p[j]·v_j over j < n in increasing j, n > 0.
	scores      func(s, q *float32, k *T, n, d, stride int, scale float32)
	sum, sumAdd func(out, p *float32, v *T, n, d, stride int)
	// The four-query block kernels (nil where there are none) need d to
	// be a multiple of 64 and give bitwise what scores and sum give.
	scoresQ4        func(s *float32, sstride int, q *float32, k *T, n, d, stride int, scale float32)
	sumQ4, sumAddQ4 func(out, p *float32, pstride int, v *T, n, d, stride int)
	// scoresQ2 (n a multiple of 8), sumQ2 and sumAddQ2 (d a multiple of
	// 128) are the two-query kernels (nil where there are none), bitwise
	// what scores and sum give: decode with two query heads per KV head
	// loads and widens each key and value once for both.
	scoresQ2        func(s *float32, sstride int, q *float32, k *T, n, d, stride int, scale float32)
	sumQ2, sumAddQ2 func(out, p *float32, pstride int, v *T, n, d, stride int)
	// scoresGo and sumGo are the pure-Go loops, used when d does not fit
	// the vector loops.
	scoresGo func(s, q []float32, k []T, n, d, stride int, scale float32)
	sumGo    func(out, p []float32, v []T, n, d, stride int, add bool)
}

func (a *kvAttn[T]) vec(d int) bool { return a.lanes > 0 && d > 0 && d%a.lanes == 0 }

// scoresN sets s[:n] for keys k_0.. k_{n-1}; n > 0.
func (a *kvAttn[T]) scoresN(s, q []float32, k []T, n, d, stride int, scale float32) {
	if a.vec(d) {
		_, _, _ = s[n-1], q[d-1], k[(n-1)*stride+d-1]
		a.scores(&s[0], &q[0], &k[0], n, d, stride, scale)
		return
	}
	a.scoresGo(s, q, k, n, d, stride, scale)
}

// sumN sets (add: adds to) out[:d] the sum over the first n values; n > 0.
func (a *kvAttn[T]) sumN(out, p []float32, v []T, n, d, stride int, add bool) {
	if a.vec(d) {
		_, _, _ = out[d-1], p[n-1], v[(n-1)*stride+d-1]
		f := a.sum
		if add {
			f = a.sumAdd
		}
		f(&out[0], &p[0], &v[0], n, d, stride)
		return
	}
	a.sumGo(out, p, v, n, d, stride, add)
}

// probabilities turns one query's n scores into the weights its sum uses:
// key scales, softmax, value scales (the scales only for an int8 cache).
func probabilities(im *impl, s, ks, vs []float32) {
	if ks != nil {
		im.mul(s, s, ks[:len(s)])
	}
	im.softmax(s)
	if vs != nil {
		im.mul(s, s, vs[:len(s)])
	}
}

// attendKV is Attend for one query head over a bfloat16 cache (int8
// caches score in integers: attendI8).
func attendKV(im *impl, a *kvAttn[uint16], out, q []float32, k, v []uint16, n, d, stride int, scale float32, scratch []float32) {
	if n == 0 {
		clear(out[:d])
		return
	}
	s := scratch[:n]
	a.scoresN(s, q, k, n, d, stride, scale)
	probabilities(im, s, nil, nil)
	a.sumN(out, s, v, n, d, stride, false)
}

// attendGroupKV is AttendGroup over a bfloat16 cache: the keys and values
// are visited in L1-sized chunks while every head of the group uses them.
// Each head's output is bitwise what attendKV computes for it.
func attendGroupKV(im *impl, a *kvAttn[uint16], out, q []float32, g int, k, v []uint16, n, d, stride int, scale float32, scratch []float32) {
	attendHeadsKV(im, a, out, q, g, [][]uint16{k}, [][]uint16{v}, n, d, stride, scale, scratch)
}

// attendHeadsKV is attendGroupKV for several key/value heads at once,
// head h's g queries at q[h*g*d:] and outputs at out[h*g*d:], its scores
// in scratch[h*g*n:]. The heads take turns chunk by chunk, and before a
// head's chunk is read the next turn's chunk is asked for (prefetched),
// so that a core has two streams of keys (then values) in flight instead
// of one. Each head's operations, and so its output, are those
// attendGroupKV gives it alone.
func attendHeadsKV(im *impl, a *kvAttn[uint16], out, q []float32, g int, k, v [][]uint16, n, d, stride int, scale float32, scratch []float32) {
	H := len(k)
	if n == 0 {
		clear(out[:H*g*d])
		return
	}
	C := chunkOf[uint16](d)
	pairs := 0
	if a.scoresQ2 != nil && a.vec(d) {
		pairs = g / 2
		_, _ = q[H*g*d-1], scratch[H*g*n-1]
		for h := range H {
			_ = k[h][(n-1)*stride+d-1]
		}
	}
	for j0 := 0; j0 < n; j0 += C {
		c := min(C, n-j0)
		c8 := c &^ 7
		for h := range H {
			if H > 1 {
				prefetchNextTurn(k, h, j0, C, n, d, stride)
			}
			qh, sh, kh := q[h*g*d:], scratch[h*g*n:], k[h]
			for i := 0; i < 2*pairs; i += 2 {
				if c8 > 0 {
					a.scoresQ2(&sh[i*n+j0], n, &qh[i*d], &kh[j0*stride], c8, d, stride, scale)
				}
				if c > c8 {
					a.scoresN(sh[i*n+j0+c8:], qh[i*d:], kh[(j0+c8)*stride:], c-c8, d, stride, scale)
					a.scoresN(sh[(i+1)*n+j0+c8:], qh[(i+1)*d:], kh[(j0+c8)*stride:], c-c8, d, stride, scale)
				}
			}
			for i := 2 * pairs; i < g; i++ {
				a.scoresN(sh[i*n+j0:], qh[i*d:], kh[j0*stride:], c, d, stride, scale)
			}
		}
	}
	for i := range H * g {
		probabilities(im, scratch[i*n:(i+1)*n], nil, nil)
	}
	headSums(a, out, scratch, n, g, v, n, d, stride)
}

// prefetchNextTurn asks for the chunk that comes after head h's chunk at
// j0 in attendHeadsKV's turns: the next head's at j0, or the first head's
// next chunk.
func prefetchNextTurn[T float32 | uint16 | int8](x [][]T, h, j0, C, n, d, stride int) {
	h++
	if h == len(x) {
		h, j0 = 0, j0+C
	}
	if j0 < n {
		prefetchSlice(x[h][j0*stride : (j0+min(C, n-j0)-1)*stride+d])
	}
}

// chunkOf is how many keys (or values) of d elements of T one chunk of
// the attention loops visits: attnChunkBytes' worth, at least 4.
func chunkOf[T float32 | uint16 | int8 | byte](d int) int {
	var zero T
	return max(4, attnChunkBytes/(int(unsafe.Sizeof(zero))*max(1, d)))
}

// groupSums sets out[i*d:][:d] = Σ_{j<n} p[i*pstride+j]·v_j for the g
// heads of one row, the values visited in chunks while every head uses
// them; each head's sum is bitwise what one sumN over all n gives.
func groupSums[T float32 | uint16 | int8](a *kvAttn[T], out, p []float32, pstride, g int, v []T, n, d, stride int) {
	headSums(a, out, p, pstride, g, [][]T{v}, n, d, stride)
}

// headSums is groupSums for several key/value heads, whose chunks take
// turns (see attendHeadsKV): head h's g outputs at out[h*g*d:], its
// weights at p[h*g*pstride:].
func headSums[T float32 | uint16 | int8](a *kvAttn[T], out, p []float32, pstride, g int, v [][]T, n, d, stride int) {
	H := len(v)
	C := chunkOf[T](d)
	pairs := 0
	if a.sumQ2 != nil && a.vec(d) && d%128 == 0 {
		pairs = g / 2
		_, _ = out[H*g*d-1], p[(H*g-1)*pstride+n-1]
		for h := range H {
			_ = v[h][(n-1)*stride+d-1]
		}
	}
	for j0 := 0; j0 < n; j0 += C {
		c := min(C, n-j0)
		for h := range H {
			if H > 1 {
				prefetchNextTurn(v, h, j0, C, n, d, stride)
			}
			oh, ph, vh := out[h*g*d:], p[h*g*pstride:], v[h]
			for i := 0; i < 2*pairs; i += 2 {
				sum := a.sumAddQ2
				if j0 == 0 {
					sum = a.sumQ2
				}
				sum(&oh[i*d], &ph[i*pstride+j0], pstride, &vh[j0*stride], c, d, stride)
			}
			for i := 2 * pairs; i < g; i++ {
				a.sumN(oh[i*d:], ph[i*pstride+j0:], vh[j0*stride:], c, d, stride, j0 > 0)
			}
		}
	}
}

// attendBlockKV is AttendBlock over a bfloat16 cache. With four-query
// kernels it blocks the rows' query heads four at a time (attendBlockQ4);
// each head's output is bitwise what attendKV computes for it.
func attendBlockKV(im *impl, a *kvAttn[uint16], out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []uint16, n0, d, stride int, scale float32, scratch []float32) {
	if a.scoresQ4 == nil || !a.vec(d) || d%64 != 0 || rows*g < 4 {
		for r := range rows {
			n := n0 + r
			attendGroupKV(im, a, out[r*ostride:], q[r*qstride:], g, k, v, n, d, stride, scale, scratch[:g*n])
		}
		return
	}
	attendBlockQ4(im, a, out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
}

// attendBlockQ4 blocks the rows' query heads four at a time through a's
// four-query kernels over chunks of keys small enough to stay in L1 while
// every tile uses them, for the float32 and bfloat16 caches: at least
// four heads, d a multiple of 64. Scratch: the scores (M·nmax), the
// queries' copy and the outputs (M·d each).
func attendBlockQ4[T float32 | uint16](im *impl, a *kvAttn[T], out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []T, n0, d, stride int, scale float32, scratch []float32) {
	M := rows * g
	nmax := n0 + rows - 1
	S := scratch[:M*nmax]
	Qb := scratch[M*nmax : M*nmax+M*d]
	for r := range rows {
		copy(Qb[r*g*d:(r+1)*g*d], q[r*qstride:r*qstride+g*d])
	}
	_ = k[(nmax-1)*stride+d-1]
	M4 := M &^ 3
	C := chunkOf[T](d) &^ 3
	for j0 := 0; j0 < nmax; j0 += C {
		c := min(C, nmax-j0)
		c4 := c &^ 3
		for i0 := 0; i0 < M4; i0 += 4 {
			if c4 > 0 {
				a.scoresQ4(&S[i0*nmax+j0], nmax, &Qb[i0*d], &k[j0*stride], c4, d, stride, scale)
			}
			for i := i0; i < i0+4 && c > c4; i++ {
				a.scores(&S[i*nmax+j0+c4], &Qb[i*d], &k[(j0+c4)*stride], c-c4, d, stride, scale)
			}
		}
		for i := M4; i < M; i++ {
			a.scores(&S[i*nmax+j0], &Qb[i*d], &k[j0*stride], c, d, stride, scale)
		}
	}
	for i := range M {
		probabilities(im, S[i*nmax:i*nmax+n0+i/g], nil, nil)
	}
	blockSums(a, out, ostride, S, rows, g, v, n0, d, stride, scratch[M*nmax+M*d:M*nmax+2*M*d])
}

// blockSums finishes AttendBlock from the probabilities S ([rows·g][nmax],
// row r's heads over their n0+r positions): the values every row sees go
// through the four-query sums chunk by chunk (a's sumQ4, d a multiple of
// 64), the few only later rows see (the causal triangle) are added query
// by query afterwards, which keeps each query's sum in increasing key
// order and bitwise what one sumN over its positions gives. Ob (rows·g·d)
// collects the outputs before they are copied to out.
func blockSums[T float32 | uint16 | int8](a *kvAttn[T], out []float32, ostride int, S []float32, rows, g int, v []T, n0, d, stride int, Ob []float32) {
	M := rows * g
	nmax := n0 + rows - 1
	_ = v[(nmax-1)*stride+d-1]
	M4 := M &^ 3
	C := chunkOf[T](d) &^ 3
	for j0 := 0; j0 < n0; j0 += C {
		c := min(C, n0-j0)
		for i0 := 0; i0 < M4; i0 += 4 {
			if j0 == 0 {
				a.sumQ4(&Ob[i0*d], &S[i0*nmax], nmax, &v[0], c, d, stride)
			} else {
				a.sumAddQ4(&Ob[i0*d], &S[i0*nmax+j0], nmax, &v[j0*stride], c, d, stride)
			}
		}
		for i := M4; i < M; i++ {
			sum := a.sumAdd
			if j0 == 0 {
				sum = a.sum
			}
			sum(&Ob[i*d], &S[i*nmax+j0], &v[j0*stride], c, d, stride)
		}
	}
	for i := range M {
		if r := i / g; r > 0 {
			a.sumAdd(&Ob[i*d], &S[i*nmax+n0], &v[n0*stride], r, d, stride)
		}
	}
	for r := range rows {
		copy(out[r*ostride:r*ostride+g*d], Ob[r*g*d:(r+1)*g*d])
	}
}

// AttendBF16 is Attend over bfloat16 keys and values: bitwise what Attend
// computes over the same values widened to float32.
func AttendBF16(out, q []float32, k, v []uint16, n, d, stride int, scale float32, scratch []float32) {
	checkAttendKV("AttendBF16", len(out), len(q), len(k), len(v), len(scratch), n, d, stride)
	attendKV(active, &active.bf16KV, out, q, k, v, n, d, stride, scale, scratch)
}

// AttendInt8 is Attend over int8 keys and values with one scale per key
// and per value: key j is ks[j]·k[j*stride:][:d], value j likewise with
// vs[j]. The query is quantized like a key (codes qc, scale qs); the
// scores are ks[j]·((scale·qs)·(qc·k_j)), the dot product in integers
// (attend_i8.go), and the weighted sum Σ_j (p_j·vs[j])·v_j. It allocates
// when scratch holds fewer than AttendBlockScratch(1, 1, n, d) floats.
func AttendInt8(out, q []float32, k, v []int8, ks, vs []float32, n, d, stride int, scale float32, scratch []float32) {
	checkAttendKV("AttendInt8", len(out), len(q), len(k), len(v), len(scratch), n, d, stride)
	checkScales("AttendInt8", ks, vs, n)
	if need := AttendBlockScratch(1, 1, n, d); len(scratch) < need {
		scratch = make([]float32, need)
	}
	attendI8(active, out, d, q, d, 1, 1, k, v, ks, vs, n, d, stride, scale, scratch)
}

func checkAttendKV(name string, lout, lq, lk, lv, lscratch, n, d, stride int) {
	if n < 0 || d < 0 || lout < d || lq < d || lscratch < n {
		panic(fmt.Sprintf("kernels: %s n=%d d=%d with len(out)=%d, len(q)=%d, len(scratch)=%d", name, n, d, lout, lq, lscratch))
	}
	if n > 0 {
		need := (n-1)*stride + d
		if stride < d || lk < need || lv < need {
			panic(fmt.Sprintf("kernels: %s n=%d d=%d stride=%d needs k and v of %d; have %d, %d", name, n, d, stride, need, lk, lv))
		}
	}
}

// checkScales checks that an int8 cache has a key and a value scale for
// each of n positions.
func checkScales(name string, ks, vs []float32, n int) {
	if len(ks) < n || len(vs) < n {
		panic(fmt.Sprintf("kernels: %s over %d positions with %d key and %d value scales", name, n, len(ks), len(vs)))
	}
}

// AttendBlockBF16 is AttendBlock over bfloat16 keys and values; every
// head's output is bitwise what AttendBF16 computes for it, and what
// AttendBlock computes over the widened values.
func AttendBlockBF16(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []uint16, n0, d, stride int, scale float32, scratch []float32) {
	checkAttendBlockKV("AttendBlockBF16", len(out), ostride, len(q), qstride, rows, g, len(k), len(v), n0, d, stride, len(scratch))
	attendBlockKV(active, &active.bf16KV, out, ostride, q, qstride, rows, g, k, v, n0, d, stride, scale, scratch)
}

// AttendHeadsBF16 is AttendBlockBF16 for one row (a streamed token) over
// len(k) key/value heads at once: head h's g query heads at q[h*g*d:],
// their outputs at out[h*g*d:], its keys and values k[h] and v[h] (stride
// d) over n positions; scratch holds AttendHeadsScratch(len(k), g, n, d)
// floats. Every head's output is bitwise what AttendBlockBF16 gives it
// alone.
func AttendHeadsBF16(out, q []float32, g int, k, v [][]uint16, n, d int, scale float32, scratch []float32) {
	H := len(k)
	if H == 0 || len(v) != H || g <= 0 || n <= 0 || d <= 0 || len(out) < H*g*d || len(q) < H*g*d || len(scratch) < AttendHeadsScratch(H, g, n, d) {
		panic(fmt.Sprintf("kernels: AttendHeadsBF16 heads=%d/%d g=%d n=%d d=%d: have out %d, q %d, scratch %d", H, len(v), g, n, d, len(out), len(q), len(scratch)))
	}
	for h := range H {
		if len(k[h]) < n*d || len(v[h]) < n*d {
			panic(fmt.Sprintf("kernels: AttendHeadsBF16 head %d: n=%d d=%d needs %d keys and values, have %d and %d", h, n, d, n*d, len(k[h]), len(v[h])))
		}
	}
	attendHeadsKV(active, &active.bf16KV, out, q, g, k, v, n, d, d, scale, scratch)
}

// AttendHeadsInt8 is AttendHeadsBF16 over int8 caches: head h's codes k[h]
// and v[h] (stride d) with per-position scales ks[h] and vs[h] (see
// AttendInt8); scratch holds AttendHeadsScratch(len(k), g, n, d) floats.
// Every head's output is bitwise what AttendBlockInt8 gives it alone.
func AttendHeadsInt8(out, q []float32, g int, k, v [][]int8, ks, vs [][]float32, n, d int, scale float32, scratch []float32) {
	H := len(k)
	if H == 0 || len(v) != H || len(ks) != H || len(vs) != H || g <= 0 || n <= 0 || d <= 0 || len(out) < H*g*d || len(q) < H*g*d || len(scratch) < AttendHeadsScratch(H, g, n, d) {
		panic(fmt.Sprintf("kernels: AttendHeadsInt8 heads=%d/%d/%d/%d g=%d n=%d d=%d: have out %d, q %d, scratch %d", H, len(v), len(ks), len(vs), g, n, d, len(out), len(q), len(scratch)))
	}
	for h := range H {
		if len(k[h]) < n*d || len(v[h]) < n*d || len(ks[h]) < n || len(vs[h]) < n {
			panic(fmt.Sprintf("kernels: AttendHeadsInt8 head %d: n=%d d=%d needs %d codes and %d scales, have %d, %d, %d, %d", h, n, d, n*d, n, len(k[h]), len(v[h]), len(ks[h]), len(vs[h])))
		}
	}
	attendHeadsI8(active, out, q, g, k, v, ks, vs, n, d, scale, scratch)
}

// AttendHeadsScratch is the scratch, in floats, that AttendHeadsBF16 and
// AttendHeadsInt8 need for heads key/value heads of g query heads each
// over n positions of d elements.
func AttendHeadsScratch(heads, g, n, d int) int {
	m := heads * g
	return m*n + i8QueryFloats(m, d)
}

// AttendBlockInt8 is AttendBlock over int8 keys and values with per-key
// and per-value scales (see AttendInt8); every head's output is bitwise
// what AttendInt8 computes for it.
func AttendBlockInt8(out []float32, ostride int, q []float32, qstride int, rows, g int, k, v []int8, ks, vs []float32, n0, d, stride int, scale float32, scratch []float32) {
	checkAttendBlockKV("AttendBlockInt8", len(out), ostride, len(q), qstride, rows, g, len(k), len(v), n0, d, stride, len(scratch))
	checkScales("AttendBlockInt8", ks, vs, n0+rows-1)
	attendI8(active, out, ostride, q, qstride, rows, g, k, v, ks, vs, n0, d, stride, scale, scratch)
}

func checkAttendBlockKV(name string, lout, ostride, lq, qstride, rows, g, lk, lv, n0, d, stride, lscratch int) {
	if rows <= 0 || g <= 0 || n0 <= 0 || d < 0 || qstride < g*d || ostride < g*d {
		panic(fmt.Sprintf("kernels: %s rows=%d g=%d n0=%d d=%d qstride=%d ostride=%d", name, rows, g, n0, d, qstride, ostride))
	}
	need := (n0+rows-2)*stride + d
	if lout < (rows-1)*ostride+g*d || lq < (rows-1)*qstride+g*d || lscratch < AttendBlockScratch(rows, g, n0, d) || stride < d || lk < need || lv < need {
		panic(fmt.Sprintf("kernels: %s rows=%d g=%d n0=%d d=%d stride=%d: have out %d, q %d, k %d, v %d, scratch %d", name, rows, g, n0, d, stride, lout, lq, lk, lv, lscratch))
	}
}

// QuantizeInt8 writes x as symmetric int8 codes with one scale, which it
// returns: scale = max|x|/127 and dst[i] = round_half_even(x[i]/scale),
// so |x[i] − scale·dst[i]| ≤ scale/2. All-zero x gives scale 0 and zero
// codes; x holding a NaN gives a NaN scale (NaN elements get code 0), so
// the NaN still reaches the attention that reads it. len(dst) >= len(x).
func QuantizeInt8(dst []int8, x []float32) float32 {
	dst = dst[:len(x)]
	var amax float32
	nan := false
	for _, v := range x {
		a := math.Float32frombits(math.Float32bits(v) &^ (1 << 31))
		if a > amax {
			amax = a
		} else if v != v {
			nan = true
		}
	}
	if amax == 0 || nan || math.IsInf(float64(amax), 0) {
		clear(dst)
		switch {
		case nan:
			return float32(math.NaN())
		case amax != 0: // an infinity: its scale is infinite too
			return amax
		}
		return 0
	}
	scale := amax / 127
	inv := 127 / amax
	for i, v := range x {
		dst[i] = int8(roundClamp127(v * inv))
	}
	return scale
}

// ToBF16 rounds x to bfloat16 (nearest, ties to even; NaN stays NaN) into
// dst; len(dst) >= len(x). Every implementation gives half.F32ToBF16's
// bits.
func ToBF16(dst []uint16, x []float32) { active.toBF16(dst[:len(x)], x) }

func toBF16Generic(dst []uint16, x []float32) {
	dst = dst[:len(x)]
	for i, f := range x {
		dst[i] = half.F32ToBF16(f)
	}
}

// Pure-Go loops. The scores use dot4's four accumulators and the sums
// axpy's order, so over bfloat16 values they give bitwise what the pure-Go
// float32 Attend gives over the widened values.

func scoresBF16Go(s, q []float32, k []uint16, n, d, stride int, scale float32) {
	q = q[:d]
	for j := range n {
		kj := k[j*stride : j*stride+d]
		var s0, s1, s2, s3 float32
		i := 0
		for ; i+4 <= d; i += 4 {
			s0 += q[i] * bf16ToF32(kj[i])
			s1 += q[i+1] * bf16ToF32(kj[i+1])
			s2 += q[i+2] * bf16ToF32(kj[i+2])
			s3 += q[i+3] * bf16ToF32(kj[i+3])
		}
		for ; i < d; i++ {
			s0 += q[i] * bf16ToF32(kj[i])
		}
		s[j] = scale * ((s0 + s1) + (s2 + s3))
	}
}

func sumBF16Go(out, p []float32, v []uint16, n, d, stride int, add bool) {
	out = out[:d]
	if !add {
		clear(out)
	}
	for j, pj := range p[:n] {
		vj := v[j*stride : j*stride+d]
		for i := range out {
			out[i] += pj * bf16ToF32(vj[i])
		}
	}
}

func sumI8Go(out, p []float32, v []int8, n, d, stride int, add bool) {
	out = out[:d]
	if !add {
		clear(out)
	}
	for j, pj := range p[:n] {
		vj := v[j*stride : j*stride+d]
		for i := range out {
			out[i] += pj * float32(vj[i])
		}
	}
}

// mulGeneric sets dst[i] = x[i]·w[i]; dst may alias x.
func mulGeneric(dst, x, w []float32) {
	x, w = x[:len(dst)], w[:len(dst)]
	for i := range dst {
		dst[i] = x[i] * w[i]
	}
}

var (
	bf16KVGeneric = kvAttn[uint16]{scoresGo: scoresBF16Go, sumGo: sumBF16Go}
	i8KVGeneric   = kvAttn[int8]{sumGo: sumI8Go}
)
