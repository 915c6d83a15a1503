package kernels

import (
	"math/rand/v2"
	"testing"
)

// TestReadSum checks the assembly probe against a plain loop at lengths
// around its 32-word blocks (the Go tail finishes the rest), with values
// that overflow so wrapping is exercised.
func TestReadSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	w := make([]uint64, 1000)
	for i := range w {
		w[i] = r.Uint64()
	}
	for _, n := range []int{0, 1, 7, 31, 32, 33, 64, 95, 96, 257, 1000} {
		var want uint64
		for _, x := range w[:n] {
			want += x
		}
		if got := ReadSum(w[:n]); got != want {
			t.Errorf("ReadSum(%d words) = %#x, want %#x (asm %v)", n, got, want, readSumAsm != nil)
		}
		if got := readSumGeneric(w[:n]); got != want {
			t.Errorf("readSumGeneric(%d words) = %#x, want %#x", n, got, want)
		}
	}
}
