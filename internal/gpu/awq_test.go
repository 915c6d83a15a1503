package gpu

import (
	"fmt"
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
	G := K / group
	src := newAutoAWQ(t, rand.New(rand.NewPCG(1, 1)), K, N, group)
	q, z, s, qweight, qzeros, scales := src.q, src.z, src.s, src.qweight, src.qzeros, src.scales
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

// autoAWQ is a random AWQ projection packed the way AutoAWQ does (by
// internal/awq, whose own reference tests pin AutoAWQ's nibble order, so a
// wrong order here would show): its codes, zero points and scales, and the
// packed tensors.
type autoAWQ struct {
	q, z            [][]uint32 // q[n][k], z[n][g]
	s               [][]uint16 // f16 bits, s[n][g]
	qweight, qzeros []int32
	scales          []uint16
}

func newAutoAWQ(t *testing.T, r *rand.Rand, K, N, group int) *autoAWQ {
	t.Helper()
	G := K / group
	a := &autoAWQ{q: make([][]uint32, N), z: make([][]uint32, N), s: make([][]uint16, N)}
	for n := range N {
		a.q[n] = make([]uint32, K)
		for k := range K {
			a.q[n][k] = uint32(r.IntN(16))
		}
		a.z[n], a.s[n] = make([]uint32, G), make([]uint16, G)
		for g := range G {
			a.z[n][g] = uint32(r.IntN(16))
			a.s[n][g] = half.F32ToF16(r.Float32()*0.01 + 1e-4)
		}
	}
	qcodes := make([]uint8, K*N) // [K][N]
	zcodes := make([]uint8, G*N) // [G][N]
	a.scales = make([]uint16, G*N)
	for n := range N {
		for k := range K {
			qcodes[k*N+n] = uint8(a.q[n][k])
		}
		for g := range G {
			zcodes[g*N+n] = uint8(a.z[n][g])
			a.scales[g*N+n] = a.s[n][g]
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
	a.qweight, a.qzeros = make([]int32, len(qw)), make([]int32, len(qz))
	for i, w := range qw {
		a.qweight[i] = int32(w)
	}
	for i, w := range qz {
		a.qzeros[i] = int32(w)
	}
	return a
}

// TestAWQFragsFromSource checks the direct AutoAWQ-to-fragments layout
// against the layout mma.cuh documents, nibble by nibble from the codes
// themselves, with and without qzeros, and stacked projections (stackFrags)
// against the layout of their stacked rows.
func TestAWQFragsFromSource(t *testing.T) {
	const K, group = 384, 64
	G := K / group
	r := rand.New(rand.NewPCG(2, 2))
	var ws [][]uint32
	var scs, negs [][]uint16
	var all autoAWQ // the stacked rows' codes, zero points and scales
	Ns := []int{48, 16, 40}
	for i, N := range Ns {
		a := newAutoAWQ(t, r, K, N, group)
		qz := a.qzeros
		if i == 1 {
			qz = nil // symmetric: zero point 8
			for n := range a.z {
				for g := range a.z[n] {
					a.z[n][g] = 8
				}
			}
		}
		w, sc, neg, err := awqFragsFromSource(a.qweight, qz, a.scales, K, N, group)
		if err != nil {
			t.Fatal(err)
		}
		checkAWQFrags(t, fmt.Sprintf("projection %d", i), a, N, K, G, w, sc, neg)
		ws, scs, negs = append(ws, w), append(scs, sc), append(negs, neg)
		all.q, all.z, all.s = append(all.q, a.q...), append(all.z, a.z...), append(all.s, a.s...)
	}
	w, sc, neg := stackFrags(ws, scs, negs, Ns, G)
	checkAWQFrags(t, "stacked", &all, 104, K, G, w, sc, neg)
	if _, _, _, err := awqFragsFromSource(make([]int32, 1), nil, scs[0], K, 48, group); err == nil {
		t.Error("a short qweight accepted")
	}
	if _, _, _, err := awqFragsFromSource(nil, nil, nil, 100, 48, group); err == nil {
		t.Error("K 100 (no whole stage) accepted")
	}
}

// checkAWQFrags checks w, sc and neg against mma.cuh's layout of a's codes:
// word ch of lane l (g = l/4, c = l%4) of n-tile nt and stage kb holds in
// nibble j the code of (row 8nt + g, k = 128kb + 32ch + 8j + 2c) and in
// nibble j+4 that of k+1; scales and −(128 + zero) in bf16, [group][row].
func checkAWQFrags(t *testing.T, what string, a *autoAWQ, N, K, G int, w []uint32, sc, neg []uint16) {
	t.Helper()
	stages := K / 128
	for nt := range N / 8 {
		for kb := range stages {
			for l := range 32 {
				for ch := range 4 {
					n, c := 8*nt+l/4, l%4
					var want uint32
					for j := range 4 {
						k := 128*kb + 32*ch + 8*j + 2*c
						want |= a.q[n][k]<<(4*j) | a.q[n][k+1]<<(4*(j+4))
					}
					if got := w[((nt*stages+kb)*32+l)*4+ch]; got != want {
						t.Fatalf("%s: word (tile %d, stage %d, lane %d, %d) = %08x, want %08x", what, nt, kb, l, ch, got, want)
					}
				}
			}
		}
	}
	for n := range N {
		for g := range G {
			if sc[g*N+n] != a.s[n][g] || neg[g*N+n] != 0xC300|uint16(a.z[n][g]) {
				t.Fatalf("%s: group %d row %d: scale %04x, neg %04x; want %04x, %04x", what, g, n, sc[g*N+n], neg[g*N+n], a.s[n][g], 0xC300|a.z[n][g])
			}
		}
	}
}
