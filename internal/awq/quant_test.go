package awq

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestQuantizeGolden: Q on the float weights of the golden cases gives the
// independent reference's codes, zero points and fp16 scales bit for bit
// (ties, clamped zero points, constant groups with a subnormal scale), and
// the packed form its qweight/qzeros words.
func TestQuantizeGolden(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "golden", "awq_pack.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases []struct {
			Name      string      `json:"name"`
			K         int         `json:"K"`
			N         int         `json:"N"`
			Group     int         `json:"group_size"`
			W         [][]float32 `json:"w"`
			Q         [][]uint8   `json:"q"`
			Z         [][]uint8   `json:"z"`
			Scales    [][]uint16  `json:"scales_f16_bits"`
			QweightI2 [][]int32   `json:"qweight_i32"`
			QzerosI32 [][]int32   `json:"qzeros_i32"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			w := flat(c.W)
			q, err := Quantize(w, c.N, c.K, c.Group)
			if err != nil {
				t.Fatal(err)
			}
			for name, pair := range map[string][2][]uint8{"codes": {q.Codes, flat(c.Q)}, "zeros": {q.Zeros, flat(c.Z)}} {
				if !slices.Equal(pair[0], pair[1]) {
					t.Errorf("%s differ from the reference:\n got %v\nwant %v", name, pair[0], pair[1])
				}
			}
			if want := flat(c.Scales); !slices.Equal(q.Scales, want) {
				t.Errorf("scales differ:\n got %v\nwant %v", q.Scales, want)
			}
			p, err := NewPacked(c.K, c.N, c.Group)
			if err != nil {
				t.Fatal(err)
			}
			// Two halves, as concurrent callers split the work.
			mid := c.N / 16 * 8
			if err := p.QuantizeRows(w, 0, mid); err != nil {
				t.Fatal(err)
			}
			if err := p.QuantizeRows(w, mid, c.N); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.QWeight, flat(c.QweightI2)) || !slices.Equal(p.QZeros, flat(c.QzerosI32)) || !slices.Equal(p.Scales, flat(c.Scales)) {
				t.Errorf("packed tensors differ from the reference")
			}
			// Fake quantization is Q then dequantization.
			fq := make([]float32, len(w))
			if err := FakeQuantize(fq, w, c.N, c.K, c.Group); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(fq, q.Dequantize()) {
				t.Errorf("FakeQuantize differs from Quantize+Dequantize")
			}
		})
	}
}

// TestRoundEven compares the float32 rounding with math.RoundToEven on ties,
// near-ties, large and special values, and random values.
func TestRoundEven(t *testing.T) {
	vals := []float32{0, float32(math.Copysign(0, -1)), 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 0.50000006, 7.5, 8.5, -15.5,
		1 << 22, 1<<22 + 0.5, 1<<23 - 0.5, 1 << 23, -(1<<23 - 0.5), 1e30, -1e30,
		float32(math.Inf(1)), float32(math.Inf(-1)), math.SmallestNonzeroFloat32}
	r := rand.New(rand.NewPCG(1, 1))
	for range 100000 {
		vals = append(vals, (r.Float32()-0.5)*64, float32(r.IntN(64))/2-16)
	}
	for _, v := range vals {
		want := float32(math.RoundToEven(float64(v)))
		if got := roundEven(v); got != want || math.Signbit(float64(got)) != math.Signbit(float64(want)) && got != 0 {
			t.Fatalf("roundEven(%v) = %v, want %v", v, got, want)
		}
	}
	if nan := roundEven(float32(math.NaN())); nan == nan {
		t.Error("NaN not kept")
	}
}

func TestQuantizeErrors(t *testing.T) {
	w := make([]float32, 8*16)
	if _, err := Quantize(w, 8, 16, 5); err == nil {
		t.Error("group 5 not dividing 16 accepted")
	}
	if _, err := Quantize(w[:10], 8, 16, 8); err == nil {
		t.Error("short weight accepted")
	}
	w[17] = float32(math.NaN())
	if _, err := Quantize(w, 8, 16, 8); err == nil {
		t.Error("NaN accepted")
	}
	w[17] = 1e9 // range/15 overflows fp16
	if err := FakeQuantize(make([]float32, len(w)), w, 8, 16, 8); err == nil {
		t.Error("weight beyond the fp16 scale range accepted")
	}
	if _, err := NewPacked(16, 12, 8); err == nil {
		t.Error("12 outputs accepted for packing")
	}
	p, _ := NewPacked(16, 16, 8)
	if err := p.QuantizeRows(make([]float32, 256), 4, 16); err == nil {
		t.Error("unaligned row range accepted")
	}
}

// TestScaleCandidate checks the duo-scaling formula on a hand-computed case.
func TestScaleCandidate(t *testing.T) {
	x := []float64{4, 1, 0.25, 0}
	w := []float64{0.5, 0.5, 0.5, 0.5}
	s := make([]float32, 4)
	// r = 1/2, duo: raw = sqrt(x)/(sqrt(0.5)+1e-4), with raw[3] clamped to 1e-4.
	ScaleCandidate(s, x, w, 0.5, true)
	d := math.Sqrt(0.5) + 1e-4
	raw := []float64{2 / d, 1 / d, 0.5 / d, 1e-4}
	norm := math.Sqrt(raw[0] * raw[3])
	for i := range s {
		if want := float32(raw[i] / norm); s[i] != want {
			t.Errorf("s[%d] = %v, want %v", i, s[i], want)
		}
	}
	// r = 0 with duo scaling: 1/(w_mean+1e-4), normalised to 1 when w_mean is flat.
	ScaleCandidate(s, x, w, 0, true)
	for i, v := range s {
		if math.Abs(float64(v)-1) > 1e-6 {
			t.Errorf("r=0 flat w_mean: s[%d] = %v, want 1", i, v)
		}
	}
	// Without duo scaling, r = 1: s = max(x, 1e-4) normalised.
	ScaleCandidate(s, x, w, 1, false)
	if want := float32(4 / math.Sqrt(4*1e-4)); s[0] != want {
		t.Errorf("no duo: s[0] = %v, want %v", s[0], want)
	}
}

func TestWeightMeanAccum(t *testing.T) {
	// One row, two groups of 2: |w|/(max+1e-6).
	w := []float32{1, -2, 0.5, 0.25}
	sum := make([]float64, 4)
	if err := WeightMeanAccum(sum, w, 1, 4, 2); err != nil {
		t.Fatal(err)
	}
	want := []float64{1 / (2 + 1e-6), 2 / (2 + 1e-6), 0.5 / (0.5 + 1e-6), 0.25 / (0.5 + 1e-6)}
	for i := range want {
		if math.Abs(sum[i]-want[i]) > 1e-7 {
			t.Errorf("sum[%d] = %v, want %v", i, sum[i], want[i])
		}
	}
	if err := WeightMeanAccum(sum[:3], w, 1, 4, 2); err == nil {
		t.Error("short accumulator accepted")
	}
}

func BenchmarkQuantizeRows(b *testing.B) {
	const K, N, G = 1024, 1024, 128
	r := rand.New(rand.NewPCG(2, 2))
	w := make([]float32, N*K)
	for i := range w {
		w[i] = r.Float32() - 0.5
	}
	p, err := NewPacked(K, N, G)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(w) * 4))
	for b.Loop() {
		if err := p.QuantizeRows(w, 0, N); err != nil {
			b.Fatal(err)
		}
	}
}

// TestQuantizeScaledRows: quantizing W·diag(s) on the fly equals
// quantizing the scaled matrix.
func TestQuantizeScaledRows(t *testing.T) {
	const K, N, G = 64, 16, 32
	r := rand.New(rand.NewPCG(5, 5))
	w, s, ws := make([]float32, N*K), make([]float32, K), make([]float32, N*K)
	for k := range s {
		s[k] = float32(math.Exp(r.NormFloat64()))
	}
	for i := range w {
		w[i] = float32(r.NormFloat64())
		ws[i] = w[i] * s[i%K]
	}
	a, _ := NewPacked(K, N, G)
	b, _ := NewPacked(K, N, G)
	if err := a.QuantizeScaledRows(w, s, 0, N); err != nil {
		t.Fatal(err)
	}
	if err := b.QuantizeRows(ws, 0, N); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.QWeight, b.QWeight) || !slices.Equal(a.QZeros, b.QZeros) || !slices.Equal(a.Scales, b.Scales) {
		t.Error("scaled quantization differs")
	}
	if err := a.QuantizeScaledRows(w, s[:3], 0, N); err == nil {
		t.Error("short scales accepted")
	}
}

// TestClipDelta: the fused clip-and-quantize error equals the two-step
// computation for every shrink step.
func TestClipDelta(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	v := make([]float32, 128)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	v[17] = 9
	mx, mn, err := GroupRange(v)
	if err != nil {
		t.Fatal(err)
	}
	m0 := MaxAbs(v)
	for i := range ClipSteps {
		b := m0 * ClipShrink(i)
		want := make([]float32, len(v))
		ClampGroup(want, v, b)
		if err := FakeQuantizeGroup(want, want); err != nil {
			t.Fatal(err)
		}
		for j := range want {
			want[j] -= v[j]
		}
		got := make([]float32, len(v))
		if err := ClipDelta(got, v, mx, mn, b); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("step %d: fused error differs", i)
		}
	}
}
