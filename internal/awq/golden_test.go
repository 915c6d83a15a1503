package awq

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// packCase is one case of testdata/golden/awq_pack.json, written by the
// independent NumPy script tools/reference/awq_pack_vectors.py from the
// format spec (not from this package).
type packCase struct {
	Name         string      `json:"name"`
	K, N         int         `json:"-"`
	KK           int         `json:"K"`
	NN           int         `json:"N"`
	Group        int         `json:"group_size"`
	Q            [][]uint8   `json:"q"` // [K][N] codes
	Z            [][]uint8   `json:"z"` // [K/G][N] zero points
	ScalesF16    [][]uint16  `json:"scales_f16_bits"`
	QweightU32   [][]uint32  `json:"qweight_u32"`
	QweightI32   [][]int32   `json:"qweight_i32"`
	QzerosU32    [][]uint32  `json:"qzeros_u32"`
	QzerosI32    [][]int32   `json:"qzeros_i32"`
	WDequantized [][]float64 `json:"w_dequant"` // [N][K]
}

func flat[T any](rows [][]T) []T {
	var out []T
	for _, r := range rows {
		out = append(out, r...)
	}
	return out
}

func TestPackGoldenVectors(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "golden", "awq_pack.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Order   []int      `json:"order"`
		Reverse []int      `json:"reverse_order"`
		Cases   []packCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if g.Order[i] != PackOrder[i] || g.Reverse[i] != ReverseOrder[i] {
			t.Fatalf("nibble orders differ: golden %v/%v, package %v/%v", g.Order, g.Reverse, PackOrder, ReverseOrder)
		}
	}
	if len(g.Cases) < 4 {
		t.Fatalf("only %d cases in the golden file", len(g.Cases))
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			K, N := c.KK, c.NN
			// Packing must give the reference's words exactly.
			qw, err := Pack(flat(c.Q), K, N)
			if err != nil {
				t.Fatal(err)
			}
			wantQW := flat(c.QweightU32)
			for i := range wantQW {
				if qw[i] != wantQW[i] {
					t.Fatalf("qweight word %d = %#08x, want %#08x", i, qw[i], wantQW[i])
				}
			}
			qz, err := Pack(flat(c.Z), K/c.Group, N)
			if err != nil {
				t.Fatal(err)
			}
			wantQZ := flat(c.QzerosU32)
			for i := range wantQZ {
				if qz[i] != wantQZ[i] {
					t.Fatalf("qzeros word %d = %#08x, want %#08x", i, qz[i], wantQZ[i])
				}
			}
			// Unpacking the signed view (as checkpoints store I32) gives the codes back.
			codes, err := Unpack(flat(c.QweightI32), K, N)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range flat(c.Q) {
				if codes[i] != want {
					t.Fatalf("code %d = %d, want %d", i, codes[i], want)
				}
			}
			// (q - z) * s is exact in float32 (|q-z| <= 15, s has an 11-bit
			// mantissa), so dequantization must equal the float64 reference.
			w, err := Dequantize(flat(c.QweightI32), flat(c.QzerosI32), flat(c.ScalesF16), K, N, c.Group)
			if err != nil {
				t.Fatal(err)
			}
			for i, want := range flat(c.WDequantized) {
				if float64(w[i]) != want {
					t.Fatalf("w[%d][%d] = %v, want %v", i/K, i%K, w[i], want)
				}
			}
		})
	}
}
