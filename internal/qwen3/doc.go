// Package qwen3 is the Qwen3 backbone of a Qwen3Guard-Stream model plus its
// eight guard heads: loading weights in their stored dtype, a per-sequence
// KV cache (float32, bfloat16 or int8 with per-head-vector scales; see
// [KVType]), and one batched forward over the new tokens of many
// sequences.
//
// The forward is written once, in [RunStep], against [Ops]: the operations
// a backend implements over its own memory (this package's CPU engine; the
// GPU in package gpu). The model is built from small parts: [Linear] (one
// weight matrix, any dtype, with a Forward method), [RMSNorm], [Attention],
// [MLP], [Layer] (one decoder block), and [Head] (a guard head pair). [Model.Forward] packs the new
// tokens of every sequence in a batch into one activation matrix so that each
// weight matrix is streamed from memory once per step, whatever the number of
// sequences, and runs attention for every (sequence, token, head) in
// parallel.
//
// # Numerics
//
// Weights stay in their stored dtype (BF16, F16 or F32) and are widened to
// float32 inside the matrix kernels; activations and all accumulations are
// float32. Only the small vectors (norm weights) are converted to float32
// at load. The KV cache is stored as its [KVType] and widened as attention
// reads it.
//
// # Batch invariance
//
// Every output of a token depends only on the token, its position and the
// contents of its own sequence's cache, computed by the same sequence of
// float32 operations whatever else is in the batch: the matrix kernels are
// per-row invariant, and the row-wise operations here (norms, RoPE,
// attention, heads) never reduce across rows. So a sequence's logits are
// bitwise identical whether it is run alone, batched with others, fed one
// token at a time or in chunks. This holds within each KV-cache type: a
// position's stored key and value (rounded or quantized) depend on that
// position's vectors alone.
package qwen3
