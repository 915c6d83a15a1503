// The backend's CUDA sources (kernels.cu, which includes mma.cuh and
// attn.cuh) compiled for the CPU with the emulator's stand-ins for CUDA
// (../mmaemu/emu.h), for the stand-in driver built with -DSTANDIN_SOURCE
// (TestStandInDriverSource). There a launch runs the kernel's own code —
// its indexing, its block and warp cooperation, its handling of the launch
// shape — instead of fakecuda.cc's reference of its contract, and the
// parameters are read with the types and sizes of the kernel's signature,
// so a Go launch whose arguments do not match the CUDA source shows.
#include "../mmaemu/emu.h"
#include "../../kernels.cu"

#include <utility>

#include "source.h"

namespace {

template <typename... A>
constexpr size_t arity(void (*)(A...)) { return sizeof...(A); }

template <typename... A>
std::vector<size_t> sizesOf(void (*)(A...)) { return {sizeof(A)...}; }

// invoke calls f with its parameters read from the launch's copies, as a
// GPU hands each thread the kernel's parameters by value.
template <typename... A, size_t... I>
void invoke(void (*f)(A...), void **p, std::index_sequence<I...>) {
	f(*static_cast<std::remove_reference_t<A> *>(p[I])...);
}

template <auto F>
void runKernel(void **p, const unsigned grid[3], const unsigned block[3]) {
	if (block[1] != 1 || block[2] != 1) {
		std::fprintf(stderr, "stand-in: a %ux%ux%u block (the kernels take one-dimensional blocks)\n", block[0], block[1], block[2]);
		std::abort();
	}
	emu_launch({grid[0], grid[1], grid[2]}, block[0], [&] { invoke(F, p, std::make_index_sequence<arity(F)>{}); });
}

#define SOURCE_KERNEL(f) {#f, sizesOf(f), runKernel<f>}

const SourceKernel table[] = {
    SOURCE_KERNEL(embed_bf16),   SOURCE_KERNEL(embed_f16),    SOURCE_KERNEL(rmsnorm),      SOURCE_KERNEL(matmul_bf16),
    SOURCE_KERNEL(matmul_f16),   SOURCE_KERNEL(matmul_awq),   SOURCE_KERNEL(add_bias),     SOURCE_KERNEL(silu_mul),
    SOURCE_KERNEL(silu_mul_rows), SOURCE_KERNEL(qk_prep),     SOURCE_KERNEL(add_inplace),  SOURCE_KERNEL(attention),
    SOURCE_KERNEL(mma_bf16_m16), SOURCE_KERNEL(mma_bf16_m64), SOURCE_KERNEL(mma_bf16_s),   SOURCE_KERNEL(mma_awq_m16),
    SOURCE_KERNEL(mma_awq_m64),  SOURCE_KERNEL(mma_awq_s),    SOURCE_KERNEL(attn_chunk),   SOURCE_KERNEL(attn_merge),
};

} // namespace

const SourceKernel *sourceKernel(const char *name) {
	for (auto &k : table)
		if (std::strcmp(k.name, name) == 0) return &k;
	return nullptr;
}
