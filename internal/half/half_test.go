package half

import (
	"math"
	"testing"
)

func TestBF16RoundTrip(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{1, 0x3f80},
		{-2, 0xc000},
		// 1 + 2^-8 is exactly halfway between two bf16 values: ties to even (down).
		{1 + 1.0/256, 0x3f80},
		// 1 + 3*2^-8 is halfway: ties to even (up).
		{1 + 3.0/256, 0x3f82},
		{float32(math.Inf(1)), 0x7f80},
	}
	for _, c := range cases {
		if got := F32ToBF16(c.in); got != c.want {
			t.Errorf("F32ToBF16(%v) = %#04x, want %#04x", c.in, got, c.want)
		}
	}
	if got := F32ToBF16(float32(math.NaN())); BF16ToF32(got) == BF16ToF32(got) {
		t.Errorf("NaN did not stay NaN: %#04x", got)
	}
	for _, b := range []uint16{0x3f80, 0xc2f7, 0x0001, 0x7f7f} {
		if got := F32ToBF16(BF16ToF32(b)); got != b {
			t.Errorf("round trip %#04x -> %#04x", b, got)
		}
	}
}

func TestF16(t *testing.T) {
	if got := F16ToF32(0x3c00); got != 1 {
		t.Errorf("F16ToF32(0x3c00) = %v", got)
	}
	if got := F32ToF16(65504); got != 0x7bff {
		t.Errorf("F32ToF16(65504) = %#04x", got)
	}
	src := []uint16{0x3c00, 0xc000, 0x0001, 0x7bff}
	dst := make([]float32, len(src))
	F16SliceToF32(dst, src)
	want := []float32{1, -2, 5.9604645e-08, 65504}
	for i := range want {
		if dst[i] != want[i] {
			t.Errorf("F16SliceToF32[%d] = %v, want %v", i, dst[i], want[i])
		}
	}
	bsrc := []uint16{0x3f80, 0x4049}
	BF16SliceToF32(dst, bsrc)
	if dst[0] != 1 || dst[1] != 3.140625 {
		t.Errorf("BF16SliceToF32 = %v", dst[:2])
	}
}
