package gpu

import (
	"math/rand/v2"
	"testing"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/half"
)

// TestRepackAWQ packs random codes, zero points and scales the way AutoAWQ
// does and checks that the GPU layout gives back every weight exactly:
// code, scale and zero·scale of each (n, k).
func TestRepackAWQ(t *testing.T) {
	const K, N, group = 256, 48, 64
	r := rand.New(rand.NewPCG(1, 1))
	G := K / group
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
	// Packed by internal/awq (its own reference tests pin AutoAWQ's nibble
	// order), so a wrong order here would show.
	qcodes := make([]uint8, K*N) // [K][N]
	zcodes := make([]uint8, G*N) // [G][N]
	scales := make([]uint16, G*N)
	for n := range N {
		for k := range K {
			qcodes[k*N+n] = uint8(q[n][k])
		}
		for g := range G {
			zcodes[g*N+n] = uint8(z[n][g])
			scales[g*N+n] = s[n][g]
		}
	}
	qw, err := awq.Pack(qcodes, K, N)
	if err != nil {
		t.Fatal(err)
	}
	qz, err := awq.Pack(zcodes, G, N)
	if err != nil {
		t.Fatal(err)
	}
	qweight, qzeros := make([]int32, len(qw)), make([]int32, len(qz))
	for i, w := range qw {
		qweight[i] = int32(w)
	}
	for i, w := range qz {
		qzeros[i] = int32(w)
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
