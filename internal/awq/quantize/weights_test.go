package quantize

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/half"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
)

// TestF32ToF16 compares the fast conversion with half.F32ToF16 on every
// boundary of the fast path, ties, and random bit patterns.
func TestF32ToF16(t *testing.T) {
	var vals []float32
	for e := uint32(100); e < 160; e++ {
		for _, m := range []uint32{0, 1, 0x0fff, 0x1000, 0x1001, 0x2000, 0x3000, 0x7fefff, 0x7ff000, 0x7fffff} {
			for _, s := range []uint32{0, 1 << 31} {
				vals = append(vals, math.Float32frombits(s|e<<23|m))
			}
		}
	}
	r := rand.New(rand.NewPCG(4, 4))
	for range 1 << 20 {
		vals = append(vals, math.Float32frombits(r.Uint32()))
	}
	vals = append(vals, 65504, 65519.99, 65520, -65520, float32(math.Inf(1)), 0, 1e-8)
	for _, v := range vals {
		if got, want := f32ToF16(v), half.F32ToF16(v); got != want && v == v {
			t.Fatalf("f32ToF16(%g = %#08x) = %#04x, want %#04x", v, math.Float32bits(v), got, want)
		}
	}
	if _, err := f16Bytes("x", []float32{1, 70000}); err == nil {
		t.Error("70000 accepted as fp16")
	}
}

// TestToF16 converts every bf16 bit pattern (and f32/f16 tensors) and
// compares with the reference conversion; values beyond fp16's range are
// refused.
func TestToF16(t *testing.T) {
	var data []byte
	var want []uint16
	for v := range 1 << 16 {
		f := half.BF16ToF32(uint16(v))
		h := half.F32ToF16(f)
		if h&0x7c00 == 0x7c00 { // beyond fp16 (or inf/NaN): tested below
			continue
		}
		data = binary.LittleEndian.AppendUint16(data, uint16(v))
		want = append(want, h)
	}
	ts := &safetensors.Tensor{Name: "e", DType: safetensors.BF16, Shape: []int{len(want)}, Data: data}
	out := make([]byte, 2*len(want))
	if err := toF16(out, ts, 0, len(want)); err != nil {
		t.Fatal(err)
	}
	for i, w := range want {
		if got := binary.LittleEndian.Uint16(out[2*i:]); got != w {
			t.Fatalf("bf16 %#04x -> %#04x, want %#04x", binary.LittleEndian.Uint16(data[2*i:]), got, w)
		}
	}
	big := &safetensors.Tensor{Name: "e", DType: safetensors.BF16, Shape: []int{1}, Data: binary.LittleEndian.AppendUint16(nil, half.F32ToBF16(1e6))}
	if err := toF16(make([]byte, 2), big, 0, 1); err == nil {
		t.Error("1e6 accepted as fp16")
	}
	f32 := &safetensors.Tensor{Name: "e", DType: safetensors.F32, Shape: []int{2}, Data: binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.1)), math.Float32bits(-3))}
	if err := toF16(out[:4], f32, 0, 2); err != nil || binary.LittleEndian.Uint16(out) != half.F32ToF16(0.1) || binary.LittleEndian.Uint16(out[2:]) != half.F32ToF16(-3) {
		t.Errorf("f32: %v %x", err, out[:4])
	}
}

// TestCandidatesAgree: the two ways of scoring a candidate scale compute
// the same product x·(Q(W·s)/s)ᵀ: exactly Q(W·s)/s in float32 for the
// float path, and with int8 activations for the INT4 path, whose error is
// bounded by the activation rounding (half a step of max|x/s|/127 per
// group of 128 inputs); 1% relative L2 leaves a margin of a few.
func TestCandidatesAgree(t *testing.T) {
	const N, K, G, T = 32, 256, 128, 8
	r := rand.New(rand.NewPCG(6, 6))
	m := &mat{name: "c", W: make([]float32, N*K), N: N, K: K}
	for i := range m.W {
		m.W[i] = float32(r.NormFloat64())
	}
	s := make([]float32, K)
	for k := range s {
		s[k] = float32(math.Exp(r.NormFloat64() / 2))
	}
	x := make([]float32, T*K)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	f, err := candidates([]*mat{m}, s, G, SearchFloat, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, N*K)
	for n := 0; n < N; n++ {
		for k := 0; k < K; k++ {
			want[n*K+k] = m.W[n*K+k] * s[k]
		}
	}
	if err := awq.FakeQuantize(want, want, N, K, G); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		want[i] *= 1 / s[i%K]
	}
	if fl := f[0].(*qwen3.F32Linear); !slices.Equal(fl.W, want) {
		t.Error("float candidate is not Q(W·s)/s")
	}
	q, err := candidates([]*mat{m}, s, G, SearchInt4, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b := make([]float32, T*N), make([]float32, T*N)
	f[0].Forward(a, x, T)
	q[0].Forward(b, x, T)
	if e := relErr(a, b); e > 0.01 {
		t.Errorf("int4 and float candidates differ by %.4f relative", e)
	}
}
