// A CPU stand-in for the little of CUDA that mma.cuh uses, so that its
// kernels compile with g++ and run with one OS thread per GPU thread: the
// block's threads meet at __syncthreads on a barrier, and the 32 lanes of
// a warp exchange their fragments for each emulated mma.sync. It checks the
// kernels' indexing — staging, fragment layouts, tiles, edges — where no GPU
// is at hand; the arithmetic of the real tensor cores (their order of
// summation inside one instruction) is not emulated bit for bit.
#pragma once
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(n)
#define MMA_EMULATED 1

struct dim3u { unsigned x = 0, y = 0, z = 0; };
inline thread_local dim3u threadIdx, blockIdx;
inline dim3u gridDim;

struct uint4 { uint32_t x, y, z, w; };
struct float4 { float x, y, z, w; };
struct float2 { float x, y; };
inline float4 make_float4(float a, float b, float c, float d) { return {a, b, c, d}; }
inline float2 make_float2(float a, float b) { return {a, b}; }
using std::min;

// bf16: the top half of a float32, rounded to nearest even.
struct __nv_bfloat16 { uint16_t bits; };
struct __nv_bfloat162 { uint16_t x, y; };
inline uint16_t f2bf(float f) {
	uint32_t u;
	std::memcpy(&u, &f, 4);
	return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
inline float bf2f(uint16_t h) {
	uint32_t u = uint32_t(h) << 16;
	float f;
	std::memcpy(&f, &u, 4);
	return f;
}
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

// The running block: its barrier, and per warp the lanes' fragments.
struct Warp {
	std::barrier<> bar{32};
	uint32_t a[32][4], b[32][2];
	float f[32];
};
struct Block {
	std::barrier<> *bar;
	Warp *warps;
};
inline Block *cur;
inline void __syncthreads() { cur->bar->arrive_and_wait(); }

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
	w.bar.arrive_and_wait();
	auto A = [&](int r, int k) { return frag(w.a[(r % 8) * 4 + (k % 8) / 2][(r / 8) + 2 * (k / 8)], k % 2); };
	auto B = [&](int k, int n) { return frag(w.b[n * 4 + (k % 8) / 2][k / 8], k % 2); };
	float out[4];
	for (int i = 0; i < 4; i++) {
		const int r = g + 8 * (i / 2), n = 2 * c + i % 2;
		float s = d[i];
		for (int k = 0; k < 16; k++) s += A(r, k) * B(k, n);
		out[i] = s;
	}
	w.bar.arrive_and_wait(); // every lane has read before any writes again
	std::memcpy(d, out, sizeof out);
}

// __shfl_xor_sync over the calling warp (every lane takes part).
inline float __shfl_xor_sync(unsigned, float v, int mask) {
	const int lane = threadIdx.x % 32;
	Warp &w = cur->warps[threadIdx.x / 32];
	w.f[lane] = v;
	w.bar.arrive_and_wait();
	const float r = w.f[lane ^ mask];
	w.bar.arrive_and_wait();
	return r;
}

// __expf: the GPU's is an approximation (ex2.approx); the emulator's is
// the C library's, which the tests' tolerances cover.
inline float __expf(float x) { return std::exp(x); }
using std::fmaxf;
