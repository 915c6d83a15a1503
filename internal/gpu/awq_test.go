package gpu

import (
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// TestRepackAWQ packs random codes, zero points and scales the way AutoAWQ
// does and checks that the GPU layout gives back every weight exactly:
// code, scale and zero·scale of each (n, k).
func TestRepackAWQ(t *testing.T) {
	const K, N, group = 256, 48, 64
	r := rand.New(rand.NewPCG(1, 1))
	G, words := K/group, N/8
	q := make([][]uint32, N) // q[n][k]
	for n := range q {
		q[n] = make([]uint32, K)
		for k := range q[n] {
			q[n][k] = uint32(r.IntN(16))
		}
	}
	z := make([][]uint32, N) // z[n][g]
	s := make([][]uint16, N)
	for n := range z {
		z[n], s[n] = make([]uint32, G), make([]uint16, G)
		for g := range G {
			z[n][g] = uint32(r.IntN(16))
			s[n][g] = half.F32ToF16(r.Float32()*0.01 + 1e-4)
		}
	}
	qweight := make([]int32, K*words)
	qzeros := make([]int32, G*words)
	scales := make([]uint16, G*N)
	for c := range words {
		for i, j := range awqOrder {
			n := 8*c + j
			for k := range K {
				qweight[k*words+c] |= int32(q[n][k] << (4 * i))
			}
			for g := range G {
				qzeros[g*words+c] |= int32(z[n][g] << (4 * i))
				scales[g*N+n] = s[n][g]
			}
		}
	}
	rp, err := repackAWQ(qweight, qzeros, scales, K, N, group)
	if err != nil {
		t.Fatal(err)
	}
	for n := range N {
		for k := range K {
			if got := rp.codes[n*(K/8)+k/8] >> (4 * (k % 8)) & 0xF; got != q[n][k] {
				t.Fatalf("code (%d, %d) = %d, want %d", n, k, got, q[n][k])
			}
		}
		for g := range G {
			sc := half.F16ToF32(s[n][g])
			if rp.scales[n*G+g] != sc || rp.zs[n*G+g] != float32(z[n][g])*sc {
				t.Fatalf("group (%d, %d): scale %v zs %v, want %v and %v", n, g, rp.scales[n*G+g], rp.zs[n*G+g], sc, float32(z[n][g])*sc)
			}
		}
	}
	// Without qzeros the zero point is 8.
	rp, err = repackAWQ(qweight, nil, scales, K, N, group)
	if err != nil {
		t.Fatal(err)
	}
	if want := 8 * half.F16ToF32(s[5][1]); rp.zs[5*G+1] != want {
		t.Errorf("symmetric zs %v, want %v", rp.zs[5*G+1], want)
	}
	if _, err := repackAWQ(qweight, qzeros, scales, K, N, 60); err == nil {
		t.Error("group 60 accepted")
	}
	if _, err := repackAWQ(qweight[1:], qzeros, scales, K, N, group); err == nil {
		t.Error("a short qweight accepted")
	}
}
