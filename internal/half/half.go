// Package half converts between float32 and the two 16-bit float formats
// found in checkpoints: bfloat16 and IEEE 754 binary16 (float16).
package half

import (
	"math"

	"github.com/x448/float16"
)

// BF16ToF32 widens a bfloat16 bit pattern; exact.
func BF16ToF32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// F32ToBF16 rounds to the nearest bfloat16, ties to even, as PyTorch does.
// NaN stays NaN (quiet).
func F32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// F16ToF32 widens a float16 bit pattern; exact.
func F16ToF32(h uint16) float32 { return float16.Frombits(h).Float32() }

// F32ToF16 rounds to the nearest float16, ties to even.
func F32ToF16(f float32) uint16 { return float16.Fromfloat32(f).Bits() }

// BF16SliceToF32 widens src into dst (len(dst) >= len(src)).
func BF16SliceToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, b := range src {
		dst[i] = math.Float32frombits(uint32(b) << 16)
	}
}

// F16SliceToF32 widens src into dst (len(dst) >= len(src)).
func F16SliceToF32(dst []float32, src []uint16) {
	dst = dst[:len(src)]
	for i, h := range src {
		dst[i] = f16Table[h]
	}
}

// f16Table holds all 65536 float16 values widened (256 KiB): converting
// through a table is several times faster than bit manipulation in Go.
var f16Table = func() *[65536]float32 {
	var t [65536]float32
	for i := range t {
		t[i] = float16.Frombits(uint16(i)).Float32()
	}
	return &t
}()
