package main

import (
	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// kvType is a storage type of the KV cache that the attention kernels
// read. Keys and values are widened to float32 as they are loaded, and
// from there every kernel does exactly what its float32 form does, so a
// cache of bfloat16 values gives bitwise the result of the float32 cache
// holding the same (widened) values.
type kvType struct {
	name  string // inserted before the ISA in kernel names; "" for float32
	gotyp string // Go element type
	size  int    // bytes per element
	shift uint8  // log2(size)
	// load widens one vector's worth of elements at m into v.
	load     func(i isa, m Mem, v VecVirtual)
	docWiden string // appended to the kernels' doc comments
}

var (
	kvF32 = kvType{name: "", gotyp: "float32", size: 4, shift: 2,
		load: func(i isa, m Mem, v VecVirtual) { VMOVUPS(m, v) }}
	// bfloat16 is the top half of a float32: zero-extend and shift.
	kvBF16 = kvType{name: "BF16", gotyp: "uint16", size: 2, shift: 1,
		load: func(i isa, m Mem, v VecVirtual) {
			VPMOVZXWD(m, v)
			VPSLLD(U8(16), v, v)
		},
		docWiden: " Keys and values are bfloat16, widened exactly."}
	// int8 values are sign-extended and converted exactly; their scales
	// are applied outside (to the probabilities). The int8 scores are
	// integer dot products of codes (attnDotI8), not float kernels.
	kvI8 = kvType{name: "I8", gotyp: "int8", size: 1, shift: 0,
		load: func(i isa, m Mem, v VecVirtual) {
			VPMOVSXBD(m, v)
			VCVTDQ2PS(v, v)
		},
		docWiden: " Keys and values are int8 codes, converted exactly (no scale)."}
)

// bytes turns a count of elements in r into bytes.
func (kt kvType) bytes(r Register) {
	if kt.shift > 0 {
		SHLQ(U8(kt.shift), r)
	}
}

// qscale is the Scale that addresses float32 queries by the byte offset
// of the same element in a key.
func (kt kvType) qscale() uint8 { return uint8(4 / kt.size) }

// attentionKV emits the attention kernels over the bfloat16 and int8
// caches: scores (bfloat16; int8 scores are attnDotI8's integers) and sums
// for both instruction sets, and the AVX-512 four-query block kernels.
func attentionKV() {
	for _, kt := range []kvType{kvBF16, kvI8} {
		for _, i := range []isa{avx2, avx512} {
			if kt.size > 1 {
				attnScores(i, kt)
			}
			attnSum(i, kt, false)
			attnSum(i, kt, true)
		}
		if kt.size > 1 {
			attentionBlock(kt)
		} else {
			attnSumQ4(kt, false)
			attnSumQ4(kt, true)
		}
		// Decode with two query heads per KV head (Qwen3 0.6B).
		if kt.size > 1 {
			attnScoresQ2(kt)
		}
		attnSumQ(kt, false, 2)
		attnSumQ(kt, true, 2)
	}
	attnDotI8()
}
