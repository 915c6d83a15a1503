package kernels

// ReadSum returns the wrapping sum of w. It exists to measure memory read
// bandwidth (the ceiling of a memory-bound decode step): with AVX-512 it
// reads the four quarters of w side by side, 64 bytes of each per loop
// iteration into independent vector accumulators, so on a slow or shared
// core the memory system, not the adder, sets its speed, and a core keeps
// as many lines in flight as the decode products (four streams a core) do.
func ReadSum(w []uint64) uint64 {
	n := 0
	var s uint64
	if readSumAsm != nil {
		n = len(w) &^ 31
		if n > 0 {
			s = readSumAsm(&w[0], n)
		}
	}
	return s + readSumGeneric(w[n:])
}

// readSumAsm is the assembly body for lengths that are a multiple of 32,
// nil where the CPU (or the build) has none.
var readSumAsm func(p *uint64, n int) uint64

// readSumGeneric sums with eight independent chains.
func readSumGeneric(w []uint64) uint64 {
	var s0, s1, s2, s3, s4, s5, s6, s7 uint64
	i := 0
	for ; i+8 <= len(w); i += 8 {
		s0 += w[i]
		s1 += w[i+1]
		s2 += w[i+2]
		s3 += w[i+3]
		s4 += w[i+4]
		s5 += w[i+5]
		s6 += w[i+6]
		s7 += w[i+7]
	}
	for ; i < len(w); i++ {
		s0 += w[i]
	}
	return s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7
}
