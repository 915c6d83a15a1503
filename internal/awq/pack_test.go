package awq

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/half"
)

// TestPackOrderGolden checks the nibble placement by hand: codes 0..7 in
// columns 0..7 land at nibbles [0,2,4,6,1,3,5,7], i.e. word 0x75316420.
func TestPackOrderGolden(t *testing.T) {
	got, err := Pack([]uint8{0, 1, 2, 3, 4, 5, 6, 7}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 0x75316420 {
		t.Fatalf("Pack = %#08x, want 0x75316420", got[0])
	}
	codes, err := Unpack([]int32{0x75316420}, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	if want := []uint8{0, 1, 2, 3, 4, 5, 6, 7}; !slices.Equal(codes, want) {
		t.Fatalf("Unpack = %v, want %v", codes, want)
	}
	// Column 8c+j sits in nibble ReverseOrder[j].
	for j, nib := range ReverseOrder {
		if PackOrder[nib] != j {
			t.Errorf("PackOrder[ReverseOrder[%d]] = %d", j, PackOrder[nib])
		}
	}
}

func TestPackUnpackRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, dims := range [][2]int{{1, 8}, {3, 16}, {128, 64}, {7, 256}} {
		rows, cols := dims[0], dims[1]
		codes := make([]uint8, rows*cols)
		for i := range codes {
			codes[i] = uint8(r.IntN(16))
		}
		p, err := Pack(codes, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != rows*cols/8 {
			t.Fatalf("%v: packed len %d", dims, len(p))
		}
		back, err := Unpack(p, rows, cols)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(back, codes) {
			t.Fatalf("%v: round trip differs", dims)
		}
		// The int32 view of the same bits unpacks identically.
		s := make([]int32, len(p))
		for i, w := range p {
			s[i] = int32(w)
		}
		back2, err := Unpack(s, rows, cols)
		if err != nil || !slices.Equal(back2, codes) {
			t.Fatalf("%v: int32 view differs (%v)", dims, err)
		}
	}
}

func TestPackErrors(t *testing.T) {
	if _, err := Pack([]uint8{16, 0, 0, 0, 0, 0, 0, 0}, 1, 8); err == nil {
		t.Error("code 16 accepted")
	}
	if _, err := Pack(make([]uint8, 12), 1, 12); err == nil {
		t.Error("12 columns accepted")
	}
	if _, err := Unpack(make([]uint32, 3), 1, 16); err == nil {
		t.Error("wrong length accepted")
	}
	if _, err := Unpack(make([]uint32, 0), 0, 8); err == nil {
		t.Error("zero rows accepted")
	}
	if _, err := Dequantize(make([]uint32, 2), make([]uint32, 1), make([]uint16, 8), 2, 8, 4); err == nil {
		t.Error("group not dividing K accepted")
	}
	if _, err := Dequantize(make([]uint32, 4), make([]uint32, 1), make([]uint16, 7), 4, 8, 4); err == nil {
		t.Error("short scales accepted")
	}
}

// TestDequantize compares against the spec formula applied to the unpacked
// codes, with scales that are exact in fp16 so the expected values are exact.
func TestDequantize(t *testing.T) {
	const K, N, G = 32, 16, 8
	r := rand.New(rand.NewPCG(3, 4))
	q := make([]uint8, K*N)
	for i := range q {
		q[i] = uint8(r.IntN(16))
	}
	z := make([]uint8, K/G*N)
	sf := make([]float32, K/G*N)
	s := make([]uint16, K/G*N)
	for i := range z {
		z[i] = uint8(r.IntN(16))
		sf[i] = float32(r.IntN(64)+1) / 256 // multiples of 2^-8: exact in fp16
		s[i] = half.F32ToF16(sf[i])
	}
	qw, err := Pack(q, K, N)
	if err != nil {
		t.Fatal(err)
	}
	qz, err := Pack(z, K/G, N)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Dequantize(qw, qz, s, K, N, G)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < N; n++ {
		for k := 0; k < K; k++ {
			g := k / G
			want := (float32(q[k*N+n]) - float32(z[g*N+n])) * sf[g*N+n]
			if w[n*K+k] != want {
				t.Fatalf("W[%d][%d] = %v, want %v", n, k, w[n*K+k], want)
			}
		}
	}
	// One hand-checked element: q=5, z=8, s=0.5 gives -1.5.
	one, err := Dequantize([]uint32{5}, []uint32{8}, []uint16{half.F32ToF16(0.5), 0, 0, 0, 0, 0, 0, 0}, 1, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if one[0] != -1.5 {
		t.Fatalf("W[0][0] = %v, want -1.5", one[0])
	}
}

func BenchmarkDequantize(b *testing.B) {
	const K, N, G = 1024, 1024, 128
	qw := make([]uint32, K*N/8)
	qz := make([]uint32, K/G*N/8)
	s := make([]uint16, K/G*N)
	for i := range qw {
		qw[i] = uint32(i) * 2654435761
	}
	dst := make([]float32, K*N)
	b.SetBytes(int64(len(qw) * 4))
	for b.Loop() {
		if err := DequantizeInto(dst, qw, qz, s, K, N, G); err != nil {
			b.Fatal(err)
		}
	}
}
