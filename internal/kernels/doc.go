// Package kernels holds the numeric inner loops of the engine: matrix
// products over float32, bfloat16 and float16 weights, and the small
// per-row operations of a transformer layer (RMSNorm, SiLU gating, RoPE,
// softmax, single-head attention).
//
// Every kernel has a pure-Go implementation and, on amd64, assembly
// implementations for AVX2+FMA and AVX-512 chosen at run time. All
// implementations of a kernel pass the same conformance tests.
//
// INT4 products (MatMulInt4) take AWQ weights repacked at load time by
// RepackAWQ. They quantize each token's activations to int8 per weight
// group (symmetric, step max|x|/127, round half to even), take exact integer
// dot products with the 4-bit codes (VPDPBUSD with AVX-512 VNNI, VPMADDUBSW
// with AVX2), and apply zero points and scales per group in float32:
// y = Σ_g s·d·(Σ q·a − z·Σ a). The result is within 1e-2·Σ|x||w| of the
// exact product with the dequantized weights.
//
// Matrix products are batch invariant: the float32 value of each output
// element is computed with the same sequence of operations whatever the
// number of tokens, the thread count, or the element's position in a tile
// or a remainder path. Different implementations (pure Go, AVX2, AVX-512)
// may round differently from each other.
package kernels
