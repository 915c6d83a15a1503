// A CPU stand-in for the little of CUDA that the backend's kernels use
// (kernels.cu, mma.cuh, attn.cuh), so that they compile with g++ and run
// on the CPU: each GPU thread of a block is a fiber on the calling OS
// thread, switched cooperatively (started with makecontext, then switched
// with _setjmp/_longjmp, which unlike swapcontext make no system call);
// the block's threads meet at __syncthreads on a barrier, and the 32 lanes
// of a warp exchange values for each shuffle and each emulated mma.sync. It checks the kernels'
// indexing — staging, fragment layouts, tiles, edges, launch shapes — where
// no GPU is at hand, and a block whose threads cannot all reach a barrier
// (a deadlock on a GPU) aborts with a message; the arithmetic of the real
// tensor cores (their order of summation inside one instruction) and of
// the GPU's fast exponential is not emulated bit for bit.
#pragma once
// Switching between fibers' stacks with _longjmp is what the fortified
// longjmp refuses.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <ucontext.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <numeric>
#include <random>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
#define MMA_EMULATED 1

struct dim3u { unsigned x = 0, y = 0, z = 0; };
// Set by emu_launch for the fiber it resumes (one block runs at a time, on
// one OS thread).
inline dim3u threadIdx, blockIdx;
inline dim3u gridDim, blockDim;

// The vector types with CUDA's alignments: a GPU faults on a misaligned
// vector load, which -fsanitize=alignment reports here.
struct alignas(16) uint4 { uint32_t x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
using std::min;

// bf16: the top half of a float32, rounded to nearest even.
struct __nv_bfloat16 { uint16_t bits; };
struct alignas(4) __nv_bfloat162 { uint16_t x, y; };
inline uint16_t f2bf(float f) {
	uint32_t u;
	std::memcpy(&u, &f, 4);
	if ((u & 0x7FFFFFFF) > 0x7F800000) return uint16_t(u >> 16) | 0x40; // NaN stays NaN
	return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
inline float bf2f(uint16_t h) {
	uint32_t u = uint32_t(h) << 16;
	float f;
	std::memcpy(&f, &u, 4);
	return f;
}
inline float __bfloat162float(__nv_bfloat16 v) { return bf2f(v.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {f2bf(f)}; }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {f2bf(a), f2bf(b)}; }
inline float __low2float(__nv_bfloat162 v) { return bf2f(v.x); }
inline float __high2float(__nv_bfloat162 v) { return bf2f(v.y); }
inline __nv_bfloat162 __hfma2(__nv_bfloat162 a, __nv_bfloat162 b, __nv_bfloat162 c) {
	return {f2bf(std::fma(bf2f(a.x), bf2f(b.x), bf2f(c.x))), f2bf(std::fma(bf2f(a.y), bf2f(b.y), bf2f(c.y)))};
}

// float16, for the AWQ scales.
struct __half { uint16_t bits; };
inline float __half2float(__half h) {
	const uint32_t sign = uint32_t(h.bits >> 15) << 31, exp = (h.bits >> 10) & 0x1F, man = h.bits & 0x3FF;
	float f;
	if (exp == 0) {
		f = std::ldexp(float(man), -24); // subnormal (or zero)
	} else if (exp == 31) {
		f = man ? NAN : INFINITY;
	} else {
		uint32_t u = ((exp + 112) << 23) | (man << 13);
		std::memcpy(&f, &u, 4);
	}
	return sign ? -f : f;
}

// emu_yield hands the OS thread back to emu_launch's scheduler, which
// resumes the block's other fibers in turn and then this one.
inline jmp_buf emuSched;
inline jmp_buf *emuSelf;
inline unsigned long emuProgress; // barriers released and blocks finished by a thread
inline void emu_yield() {
	if (!_setjmp(*emuSelf)) _longjmp(emuSched, 1);
}

// EmuBarrier is a barrier for n fibers: the last to arrive releases the
// others.
struct EmuBarrier {
	unsigned n, count = 0, gen = 0;
	void wait() {
		const unsigned g = gen;
		if (++count == n) {
			count = 0, gen++, emuProgress++;
			return;
		}
		while (gen == g) emu_yield();
	}
};

// The running block: its barrier, and per warp the lanes' fragments.
struct Warp {
	EmuBarrier bar{32};
	uint32_t a[32][4], b[32][2];
	double f[32];
};
struct Block {
	EmuBarrier *bar;
	Warp *warps;
};
inline Block *cur;
inline void __syncthreads() { cur->bar->wait(); }

// mma_emulated is mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 over the
// calling warp, with the PTX ISA's fragment layout: lane l (g = l/4,
// c = l%4) holds A rows g and g+8 at k 2c, 2c+1 (registers 0, 1) and k+8
// (2, 3); B column g at k 2c, 2c+1 (register 0) and k+8 (1); C rows g
// (0, 1) and g+8 (2, 3) at columns 2c, 2c+1.
inline float frag(uint32_t reg, int half) { return bf2f(uint16_t(reg >> (16 * half))); }
inline void mma_emulated(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
	const int lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
	Warp &w = cur->warps[threadIdx.x / 32];
	std::memcpy(w.a[lane], a, sizeof w.a[lane]);
	w.b[lane][0] = b0, w.b[lane][1] = b1;
	w.bar.wait();
	auto A = [&](int r, int k) { return frag(w.a[(r % 8) * 4 + (k % 8) / 2][(r / 8) + 2 * (k / 8)], k % 2); };
	auto B = [&](int k, int n) { return frag(w.b[n * 4 + (k % 8) / 2][k / 8], k % 2); };
	float out[4];
	for (int i = 0; i < 4; i++) {
		const int r = g + 8 * (i / 2), n = 2 * c + i % 2;
		float s = d[i];
		for (int k = 0; k < 16; k++) s += A(r, k) * B(k, n);
		out[i] = s;
	}
	w.bar.wait(); // every lane has read before any writes again
	std::memcpy(d, out, sizeof out);
}

// __shfl_xor_sync over the calling warp (every lane takes part), for the
// float and double values the kernels exchange.
template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
	static_assert(sizeof(T) <= sizeof(double));
	const int lane = threadIdx.x % 32;
	Warp &w = cur->warps[threadIdx.x / 32];
	w.f[lane] = double(v);
	w.bar.wait();
	const T r = T(w.f[lane ^ mask]);
	w.bar.wait();
	return r;
}

// __expf: the GPU's is an approximation (ex2.approx); the emulator's is
// the C library's, which the tests' tolerances cover.
inline float __expf(float x) { return std::exp(x); }
using std::fmaxf;

// emu_launch runs kernel on a grid of one-dimensional blocks of threads
// threads (whole warps), one block at a time, in an order shuffled anew for
// each launch: a GPU runs blocks in any order and at once, so a kernel
// whose blocks depend on one another's writes is wrong there, and here
// its results change from launch to launch (the tests compare launches
// bitwise). Each thread's fiber runs the kernel for one block, then waits
// for the next; the scheduler resumes the block's fibers in turn until all
// have finished it. Launches from several OS threads take turns.
struct EmuFiber {
	jmp_buf jb;
	ucontext_t start;
	bool started, blockDone;
};
inline EmuFiber *emuFibers;
inline void (*emuEntry)(void *);
inline void *emuArg;

inline void emu_fiber_main() {
	for (;;) {
		emuEntry(emuArg);
		emuFibers[threadIdx.x].blockDone = true;
		emuProgress++;
		emu_yield(); // resumed for the next block
	}
}

template <typename F>
inline void emu_launch(dim3u grid, unsigned threads, F kernel) {
	if (threads == 0 || threads % 32 != 0 || threads > 1024) {
		std::fprintf(stderr, "emu_launch: a block of %u threads (want whole warps, at most 1024)\n", threads);
		std::abort();
	}
	static std::mutex mu;
	std::lock_guard<std::mutex> lock(mu);
	// The fibers' stacks, kept from launch to launch.
	constexpr size_t stackBytes = 64 << 10;
	static std::vector<std::unique_ptr<char[]>> stacks;
	while (stacks.size() < threads) stacks.emplace_back(new char[stackBytes]);
	gridDim = grid;
	blockDim = {threads, 1, 1};
	EmuBarrier bar{threads};
	std::vector<Warp> warps(threads / 32);
	Block b{&bar, warps.data()};
	cur = &b;
	std::vector<EmuFiber> fibers(threads);
	emuFibers = fibers.data();
	emuEntry = [](void *k) { (*static_cast<F *>(k))(); };
	emuArg = &kernel;
	for (unsigned t = 0; t < threads; t++) {
		EmuFiber &f = fibers[t];
		getcontext(&f.start);
		f.start.uc_stack.ss_sp = stacks[t].get();
		f.start.uc_stack.ss_size = stackBytes;
		f.start.uc_link = nullptr; // emu_fiber_main never returns
		makecontext(&f.start, emu_fiber_main, 0);
	}
	static std::mt19937_64 rng(1);
	std::vector<uint64_t> order(uint64_t(grid.x) * grid.y * grid.z);
	std::iota(order.begin(), order.end(), 0);
	std::shuffle(order.begin(), order.end(), rng);
	for (uint64_t i : order) {
		const unsigned bx = unsigned(i % grid.x), by = unsigned(i / grid.x % grid.y), bz = unsigned(i / grid.x / grid.y);
		blockIdx = {bx, by, bz};
		for (auto &f : fibers) f.blockDone = false;
		for (unsigned live = threads; live > 0;) {
			const unsigned long before = emuProgress;
			for (unsigned t = 0; t < threads; t++) {
				EmuFiber &f = fibers[t];
				if (f.blockDone) continue;
				threadIdx = {t, 0, 0};
				emuSelf = &f.jb;
				if (!_setjmp(emuSched)) {
					if (!f.started) {
						f.started = true;
						setcontext(&f.start);
					}
					_longjmp(f.jb, 1);
				}
				if (f.blockDone) live--;
			}
			if (live > 0 && emuProgress == before) {
				std::fprintf(stderr, "emu_launch: block (%u,%u,%u): %u threads wait at a barrier the others never reach\n", bx, by, bz, live);
				std::abort();
			}
		}
	}
	// The fibers wait in emu_yield for a block that never comes; their
	// stacks hold nothing that needs destroying.
}
