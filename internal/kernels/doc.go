// Package kernels holds the numeric inner loops of the engine: matrix
// products over float32, bfloat16 and float16 weights, and the small
// per-row operations of a transformer layer (RMSNorm, SiLU gating, RoPE,
// softmax, single-head attention).
//
// Every kernel has a pure-Go implementation and, on amd64, assembly
// implementations for AVX2+FMA and AVX-512 chosen at run time. All
// implementations of a kernel pass the same conformance tests.
//
// Matrix products are batch invariant: the float32 value of each output
// element is computed with the same sequence of operations whatever the
// number of tokens, the thread count, or the element's position in a tile
// or a remainder path. Different implementations (pure Go, AVX2, AVX-512)
// may round differently from each other.
package kernels
