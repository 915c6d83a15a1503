package kernels

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// TestInt4FromLayout: matrices rebuilt from their Layout bytes, and
// matrices repacked into caller buffers, are the repacked ones: same
// bytes, same products, joined in place by ConcatInt4; wrong lengths are
// refused.
func TestInt4FromLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const K, group = 256, 64
	Ns := []int{64, 32, 40} // the last not a whole block
	var parts []AWQParts
	for _, N := range Ns {
		qw, qz, sc := randomAWQWords(r, K, N, group, N == 32)
		for i := range sc { // finite scales, so that products compare
			sc[i] = half.F32ToF16(r.Float32()/16 + 1e-3)
		}
		parts = append(parts, AWQParts{QWeight: qw, QZeros: qz, Scales: sc, K: K, N: N})
	}
	stacked, err := RepackAWQStacked(parts, group)
	if err != nil {
		t.Fatal(err)
	}
	var qs, meta []byte
	for _, m := range stacked {
		q, mt := m.Layout()
		qs, meta = append(qs, q...), append(meta, mt...)
	}
	var qn, mn int
	for _, N := range Ns {
		q, m, err := Int4LayoutSizes(K, N, group)
		if err != nil {
			t.Fatal(err)
		}
		qn, mn = qn+q, mn+m
	}
	if qn != len(qs) || mn != len(meta) {
		t.Fatalf("Int4LayoutSizes sum to %d and %d, the repacked matrices hold %d and %d", qn, mn, len(qs), len(meta))
	}
	rebuilt, err := Int4FromLayout(K, group, Ns, qs, meta)
	if err != nil {
		t.Fatal(err)
	}
	into, err := RepackAWQInto(parts, group, make([]byte, qn), make([]byte, mn))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, 3*K)
	for i := range x {
		x[i] = r.Float32()*2 - 1
	}
	for i, N := range Ns {
		for name, m := range map[string]*Int4Matrix{"Int4FromLayout": rebuilt[i], "RepackAWQInto": into[i]} {
			if !bytes.Equal(m.qs, stacked[i].qs) || !bytes.Equal(m.meta, stacked[i].meta) {
				t.Fatalf("%s: matrix %d bytes differ", name, i)
			}
			want, got := make([]float32, 3*N), make([]float32, 3*N)
			MatMulInt4(want, x, stacked[i], 3)
			MatMulInt4(got, x, m, 3)
			if !slices.Equal(got, want) {
				t.Fatalf("%s: matrix %d products differ", name, i)
			}
		}
	}
	joined, _, err := ConcatInt4(rebuilt[0], rebuilt[1])
	if err != nil || &joined.qs[0] != &qs[0] {
		t.Errorf("ConcatInt4 of rebuilt neighbours copied (%v)", err)
	}
	for _, bad := range []struct {
		qs, meta []byte
		Ns       []int
	}{
		{qs[:len(qs)-1], meta, Ns},
		{qs, meta[:len(meta)-1], Ns},
		{append(slices.Clone(qs), 0), meta, Ns},
		{qs, meta, []int{64, 32}},
		{qs, meta, []int{64, 32, 44}}, // not a multiple of 8
		{qs, meta, nil},
	} {
		if _, err := Int4FromLayout(K, group, bad.Ns, bad.qs, bad.meta); err == nil {
			t.Errorf("accepted %d code and %d record bytes for outputs %v", len(bad.qs), len(bad.meta), bad.Ns)
		}
	}
	if _, err := RepackAWQInto(parts, group, make([]byte, qn+1), make([]byte, mn)); err == nil {
		t.Error("RepackAWQInto accepted a buffer of the wrong length")
	}
	if _, _, err := Int4LayoutSizes(1<<40, 1<<20, 64); err == nil {
		t.Error("Int4LayoutSizes accepted an overflowing size")
	}
}
