package kernels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
)

// repackAWQReference is the element-at-a-time repack that RepackAWQ
// replaced, kept to pin the word-at-a-time version byte for byte. It
// assumes validated shapes.
func repackAWQReference(qweight, qzeros []int32, scales []uint16, K, N, group int) *Int4Matrix {
	words, groups := N/8, K/group
	// Output column 8c+j sits in nibble awqReverse[j] of word c.
	awqReverse := [8]uint{0, 4, 1, 5, 2, 6, 3, 7}
	blocks := (N + int4Block - 1) / int4Block
	tiles := group / 8
	m := &Int4Matrix{
		K: K, N: N, Group: group, blocks: blocks, groups: groups,
		qs:   make([]byte, blocks*groups*tiles*64),
		meta: make([]byte, blocks*groups*int4Meta),
	}
	for k := range K {
		g, ti, j, hi := k/group, (k%group)/8, k%4, uint(k%8/4)*4
		row := qweight[k*words : (k+1)*words]
		for n := range N {
			q := byte(uint32(row[n/8])>>(4*awqReverse[n%8])) & 0xF
			b, ln := n/int4Block, n%int4Block
			m.qs[((b*groups+g)*tiles+ti)*64+4*ln+j] |= q << hi
		}
	}
	for g := range groups {
		for n := range N {
			b, ln := n/int4Block, n%int4Block
			rec := m.meta[(b*groups+g)*int4Meta:]
			binary.LittleEndian.PutUint16(rec[2*ln:], scales[g*N+n])
			z := byte(8)
			if qzeros != nil {
				z = byte(uint32(qzeros[g*words+n/8])>>(4*awqReverse[n%8])) & 0xF
			}
			rec[32+ln] = z
		}
	}
	return m
}

// randomAWQWords fills raw AWQ tensors with arbitrary bits, so every nibble
// position and value (including the sign bit of the int32) is exercised.
func randomAWQWords(r *rand.Rand, K, N, group int, symmetric bool) (qw, qz []int32, sc []uint16) {
	qw = make([]int32, K*N/8)
	for i := range qw {
		qw[i] = int32(r.Uint32())
	}
	if !symmetric {
		qz = make([]int32, K/group*N/8)
		for i := range qz {
			qz[i] = int32(r.Uint32())
		}
	}
	sc = make([]uint16, K/group*N)
	for i := range sc {
		sc[i] = uint16(r.Uint32())
	}
	return qw, qz, sc
}

func TestRepackAWQMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	shapes := []struct{ K, N, group int }{
		{8, 8, 8}, {32, 8, 32}, {64, 24, 32}, {128, 40, 64}, {256, 56, 128},
		{128, 16, 128}, {256, 48, 64}, {384, 104, 128}, {512, 96, 32}, {96, 8, 16},
	}
	for _, sh := range shapes {
		for _, symmetric := range []bool{false, true} {
			t.Run(fmt.Sprintf("K%d_N%d_g%d_sym%v", sh.K, sh.N, sh.group, symmetric), func(t *testing.T) {
				qw, qz, sc := randomAWQWords(r, sh.K, sh.N, sh.group, symmetric)
				got, err := RepackAWQ(qw, qz, sc, sh.K, sh.N, sh.group)
				if err != nil {
					t.Fatal(err)
				}
				want := repackAWQReference(qw, qz, sc, sh.K, sh.N, sh.group)
				if got.K != want.K || got.N != want.N || got.Group != want.Group ||
					got.blocks != want.blocks || got.groups != want.groups {
					t.Fatalf("header %d %d %d %d %d, want %d %d %d %d %d", got.K, got.N, got.Group, got.blocks, got.groups,
						want.K, want.N, want.Group, want.blocks, want.groups)
				}
				if i := firstDiff(got.qs, want.qs); i >= 0 {
					t.Fatalf("qs differs at byte %d of %d (len %d, want %d)", i, len(want.qs), len(got.qs), len(want.qs))
				}
				if i := firstDiff(got.meta, want.meta); i >= 0 {
					t.Fatalf("meta differs at byte %d of %d (len %d, want %d)", i, len(want.meta), len(got.meta), len(want.meta))
				}
			})
		}
	}
}

// firstDiff returns the first index where a and b differ, -1 if equal.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// BenchmarkRepackAWQ times one 1024×3072 group-128 Linear (a 0.6B model's
// attention-sized layer); -short shrinks it for CI.
func BenchmarkRepackAWQ(b *testing.B) {
	K, N := 1024, 3072
	if testing.Short() {
		K, N = 128, 256
	}
	qw, qz, sc := randomAWQWords(rand.New(rand.NewPCG(1, 2)), K, N, 128, false)
	b.Run("word", func(b *testing.B) {
		b.SetBytes(int64(4 * len(qw)))
		for b.Loop() {
			if _, err := RepackAWQ(qw, qz, sc, K, N, 128); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reference", func(b *testing.B) {
		b.SetBytes(int64(4 * len(qw)))
		for b.Loop() {
			repackAWQReference(qw, qz, sc, K, N, 128)
		}
	})
}

// FuzzRepackAWQReference checks valid shapes with fuzzed tensor bits
// against the element-at-a-time reference.
func FuzzRepackAWQReference(f *testing.F) {
	f.Add(uint8(15), uint8(1), uint8(0), false, uint64(1))
	f.Add(uint8(3), uint8(2), uint8(5), true, uint64(99))
	f.Fuzz(func(t *testing.T, g, k, n uint8, sym bool, seed uint64) {
		group := 8 * (int(g)%16 + 1)
		K, N := group*(int(k)%8+1), 8*(int(n)%24+1)
		qw, qz, sc := randomAWQWords(rand.New(rand.NewPCG(seed, uint64(g))), K, N, group, sym)
		got, err := RepackAWQ(qw, qz, sc, K, N, group)
		if err != nil {
			t.Fatal(err)
		}
		want := repackAWQReference(qw, qz, sc, K, N, group)
		if !bytes.Equal(got.qs, want.qs) || !bytes.Equal(got.meta, want.meta) ||
			got.blocks != want.blocks || got.groups != want.groups {
			t.Fatalf("K=%d N=%d group=%d sym=%v: repack differs from reference", K, N, group, sym)
		}
	})
}

// TestRepackAWQStackedJoinsWithoutCopy: matrices repacked together are
// byte for byte what RepackAWQ gives each, and ConcatInt4 of them is the
// copying concatenation's bytes, in the same memory as the parts.
func TestRepackAWQStackedJoinsWithoutCopy(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const K, group = 256, 64
	var parts []AWQParts
	var single []*Int4Matrix
	for _, N := range []int{64, 32, 32} { // q, k, v shapes
		qw, qz, sc := randomAWQWords(r, K, N, group, N == 32)
		parts = append(parts, AWQParts{QWeight: qw, QZeros: qz, Scales: sc, K: K, N: N})
		m, err := RepackAWQ(qw, qz, sc, K, N, group)
		if err != nil {
			t.Fatal(err)
		}
		single = append(single, m)
	}
	stacked, err := RepackAWQStacked(parts, group)
	if err != nil {
		t.Fatal(err)
	}
	for i := range parts {
		if !bytes.Equal(stacked[i].qs, single[i].qs) || !bytes.Equal(stacked[i].meta, single[i].meta) {
			t.Fatalf("part %d: stacked repack differs from RepackAWQ", i)
		}
	}
	want, _, err := ConcatInt4(single...)
	if err != nil {
		t.Fatal(err)
	}
	got, views, err := ConcatInt4(stacked...)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.qs, want.qs) || !bytes.Equal(got.meta, want.meta) || got.N != want.N || got.blocks != want.blocks {
		t.Fatal("joined matrix differs from the copying concatenation")
	}
	if &got.qs[0] != &stacked[0].qs[0] || &got.meta[0] != &stacked[0].meta[0] || views[2] != stacked[2] {
		t.Error("ConcatInt4 copied matrices that were stacked")
	}
	// Out of order, they are not neighbours: the copy path.
	got, _, err = ConcatInt4(stacked[1], stacked[0])
	if err != nil || &got.qs[0] == &stacked[1].qs[0] {
		t.Errorf("out-of-order parts were joined in place: %v", err)
	}
}
