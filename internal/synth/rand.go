package synth

import "math/bits"

// The weights come from a counter-based generator: element i of a tensor
// is a pure function of (seed, tensor name, i). Chunks of a tensor can then
// be filled on any core in any order with identical bytes, and the values
// use only integer arithmetic and exactly rounded float32 operations, so
// they do not depend on the Go version or the machine.

const golden = 0x9e3779b97f4a7c15

// mix64 is the splitmix64 output function.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// streamKey derives the key of one named stream from the seed.
func streamKey(seed uint64, name string) uint64 {
	h := uint64(14695981039346656037) // FNV-1a
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return mix64(mix64(seed+golden) ^ h)
}

// draw is the i-th 64-bit value of the stream with the given key: the
// (i+1)-th output of splitmix64 started at key.
func draw(key uint64, i uint64) uint64 { return mix64(key + (i+1)*golden) }

// symmetric maps r to a uniform float32 in [-1, 1).
func symmetric(r uint64) float32 { return float32(int32(uint32(r>>32))) * 0x1p-31 }

// unit maps r to a uniform float32 in [0, 1).
func unit(r uint64) float32 { return float32(r>>40) * 0x1p-24 }

// gaussianScale is 1/sqrt(16 + 1/12), the std of popcount(64 bits) - 32
// plus a uniform in [-0.5, 0.5).
const gaussianScale = 0.24935149

// gaussian maps two draws to an approximately standard normal float32: a
// Binomial(64, 1/2) count smoothed by a uniform. Its excess kurtosis is
// -0.03 and its tails end at ±8.1σ, enough for an initializer replica.
func gaussian(r1, r2 uint64) float32 {
	c := float32(bits.OnesCount64(r1) - 32)
	u := float32(unit(r2) - 0.5)
	return float32(c+u) * gaussianScale
}
