package train

import "math/bits"

// rng is splitmix64: tiny, and its stream depends only on the seed, never
// on the Go version, so a seed reproduces a run anywhere.
type rng struct{ s uint64 }

// newRNG derives an independent stream for one purpose from the seed.
func newRNG(seed uint64, stream string) *rng {
	h := uint64(14695981039346656037) // FNV-1a of the stream name
	for i := 0; i < len(stream); i++ {
		h ^= uint64(stream[i])
		h *= 1099511628211
	}
	r := &rng{s: seed ^ h}
	r.next()
	return r
}

func (r *rng) next() uint64 {
	r.s += 0x9e3779b97f4a7c15
	z := r.s
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// intn returns a value in [0, n) (n > 0), by Lemire's multiply-shift; the
// bias is below 2^-40 for the sizes used here.
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// uniform returns a float32 in [-1, 1).
func (r *rng) uniform() float32 { return float32(int64(r.next()>>40)-(1<<23)) * 0x1p-23 }

// perm returns a random permutation of [0, n) (Fisher–Yates).
func (r *rng) perm(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	for i := n - 1; i > 0; i-- {
		j := r.intn(i + 1)
		p[i], p[j] = p[j], p[i]
	}
	return p
}
