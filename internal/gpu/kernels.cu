// CUDA kernels of streamguard's GPU backend, compiled to PTX by
// `go generate ./internal/gpu` (gen.sh) and embedded in the binary; the
// driver compiles the PTX for the GPU at hand when the module is loaded.
//
// Activations are float32 and row-major ([tokens][width]); weights are bf16
// as stored in the checkpoint, [out][in] row-major (PyTorch's Linear); the
// KV cache is bf16 in fixed-size blocks of positions (paged): the cache of
// a layer is [blocks][block_size][kv_heads][head_dim], and a token's slot
// (block * block_size + offset) is computed on the host from the stream's
// block table. Each kernel mirrors a CPU kernel of internal/kernels; the
// comment above it says which, and the tests compare them.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define WARP 32
#define MAX_HEAD_DIM 256 // the largest head the attention and qk_prep kernels take

#include "mma.cuh"
#include "attn.cuh"

__device__ __forceinline__ float bf16f(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float warp_sum(float v) {
	for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
	return v;
}

__device__ __forceinline__ float warp_max(float v) {
	for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
	return v;
}

// embed gathers rows of a bf16 or f16 table: out[t] = table[ids[t]] (qwen3
// DenseEmbedding.Lookup). grid (T), block (256).
extern "C" __global__ void embed_bf16(float *out, const __nv_bfloat16 *table, const int32_t *ids, int32_t H) {
	int t = blockIdx.x;
	const __nv_bfloat16 *row = table + (int64_t)ids[t] * H;
	for (int i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)t * H + i] = bf16f(row[i]);
}

extern "C" __global__ void embed_f16(float *out, const __half *table, const int32_t *ids, int32_t H) {
	int t = blockIdx.x;
	const __half *row = table + (int64_t)ids[t] * H;
	for (int i = threadIdx.x; i < H; i += blockDim.x) out[(int64_t)t * H + i] = __half2float(row[i]);
}

// rms_scale is the RMSNorm factor of a row of width d read by the whole
// block: 1 / sqrt(mean(x²) + eps), the sum of squares in float64 as the
// CPU kernel keeps it, reduced over the warps in a fixed order. part is
// the block's shared scratch of 32 doubles.
__device__ __forceinline__ float rms_scale(const float *xr, int32_t d, float eps, double *part) {
	double ss = 0;
	for (int i = threadIdx.x; i < d; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
	for (int o = WARP / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	if (lane == 0) part[warp] = ss;
	__syncthreads();
	if (warp == 0) {
		ss = lane < blockDim.x / WARP ? part[lane] : 0;
		for (int o = WARP / 2; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffff, ss, o);
		if (lane == 0) part[0] = ss;
	}
	__syncthreads();
	return (float)(1.0 / sqrt(part[0] / d + (double)eps));
}

// rmsnorm normalises each of rows rows of width d (kernels.RMSNorm):
// out = w * (x · rms_scale). out may be x. grid (rows), block (a multiple
// of 32, ≤ 1024). The bound holds the driver's compiler to 64 registers a
// thread, without which a block of 1024 threads could fail to launch.
extern "C" __global__ void __launch_bounds__(1024) rmsnorm(float *out, const float *x, const float *w, int32_t d, float eps) {
	__shared__ double part[32];
	const float *xr = x + (int64_t)blockIdx.x * d;
	float *outr = out + (int64_t)blockIdx.x * d;
	float r = rms_scale(xr, d, eps, part);
	for (int i = threadIdx.x; i < d; i += blockDim.x) outr[i] = w[i] * (xr[i] * r);
}

// matmul computes y[t][n] = Σ_k x[t][k]·W[n][k] for T tokens (the dense
// Linear.Forward of the CPU engine), one warp per output row n and up to 8
// tokens at a time, so that each weight row is read once per 8 tokens. W
// holds 16-bit floats (bf16 or f16, converted by Cvt); a lane reads 8 of
// them (16 bytes) at a time when K is a multiple of 8.
// grid (ceil(N / warps per block), ceil(T / 8)), block (warps per block × 32).
#define MM_TOK 8
struct BF16 {
	typedef __nv_bfloat16 T;
	static __device__ __forceinline__ float f(T v) { return __bfloat162float(v); }
};
struct F16 {
	typedef __half T;
	static __device__ __forceinline__ float f(T v) { return __half2float(v); }
};

// mm_dot8 adds the products of 8 weights (k..k+7 of one output row) with
// the same 8 inputs of each of the nt tokens from t0 to their accumulators.
__device__ __forceinline__ void mm_dot8(float acc[MM_TOK], const float *x, int32_t K, int t0, int nt, int k, const float wf[8]) {
#pragma unroll
	for (int j = 0; j < MM_TOK; j++) {
		if (j < nt) {
			const float4 *xp = (const float4 *)(x + (int64_t)(t0 + j) * K + k);
			float4 a = xp[0], b = xp[1];
			acc[j] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] + b.y * wf[5] + b.z * wf[6] + b.w * wf[7];
		}
	}
}

// mm_store sums each token's accumulators over the warp and writes output n.
__device__ __forceinline__ void mm_store(float *y, float acc[MM_TOK], int32_t N, int n, int t0, int nt, int lane) {
#pragma unroll
	for (int j = 0; j < MM_TOK; j++) {
		float s = warp_sum(acc[j]);
		if (lane == 0 && j < nt) y[(int64_t)(t0 + j) * N + n] = s;
	}
}

template <typename Cvt>
__device__ __forceinline__ void matmul16(float *y, const float *x, const typename Cvt::T *W, int32_t T, int32_t N, int32_t K) {
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int n = blockIdx.x * (blockDim.x / WARP) + warp;
	int t0 = blockIdx.y * MM_TOK;
	if (n >= N) return;
	int nt = min(MM_TOK, T - t0);
	float acc[MM_TOK];
#pragma unroll
	for (int j = 0; j < MM_TOK; j++) acc[j] = 0;
	const typename Cvt::T *w = W + (int64_t)n * K;
	int k8 = (K % 8 == 0) ? K : 0;
	for (int k = lane * 8; k < k8; k += WARP * 8) {
		// One 16-byte load, its bytes then viewed as 8 weights (memcpy:
		// reading a uint4 through another type's pointer breaks C++'s
		// aliasing rules, which the CPU emulation's compiler exploits).
		uint4 raw = *(const uint4 *)(w + k);
		typename Cvt::T wv[8];
		memcpy(wv, &raw, sizeof wv);
		float wf[8];
#pragma unroll
		for (int i = 0; i < 8; i++) wf[i] = Cvt::f(wv[i]);
		mm_dot8(acc, x, K, t0, nt, k, wf);
	}
	for (int k = k8 + lane; k < K; k += WARP) {
		float wf = Cvt::f(w[k]);
		for (int j = 0; j < nt; j++) acc[j] += x[(int64_t)(t0 + j) * K + k] * wf;
	}
	mm_store(y, acc, N, n, t0, nt, lane);
}

extern "C" __global__ void matmul_bf16(float *y, const float *x, const __nv_bfloat16 *W, int32_t T, int32_t N, int32_t K) {
	matmul16<BF16>(y, x, W, T, N, K);
}

extern "C" __global__ void matmul_f16(float *y, const float *x, const __half *W, int32_t T, int32_t N, int32_t K) {
	matmul16<F16>(y, x, W, T, N, K);
}

// matmul_awq is matmul for an AWQ INT4 weight (AWQLinear.Forward, with the
// activations kept in float32): W[n][k] = q·s − z·s for the 4-bit code q
// of (n, k) and the scale s and zero point z of its group. The host repacks
// AutoAWQ's layout at upload: codes [N][K/8] words, word w of row n holding
// k = 8w..8w+7 in nibbles 0..7; scales and zs = z·s as float32 [N][K/group].
// A lane takes every 32nd word, so a warp reads 128 contiguous bytes.
// Same grid and block as matmul.
extern "C" __global__ void matmul_awq(float *y, const float *x, const uint32_t *codes, const float *scales, const float *zs,
                                      int32_t T, int32_t N, int32_t K, int32_t group) {
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int n = blockIdx.x * (blockDim.x / WARP) + warp;
	int t0 = blockIdx.y * MM_TOK;
	if (n >= N) return;
	int nt = min(MM_TOK, T - t0);
	float acc[MM_TOK];
#pragma unroll
	for (int j = 0; j < MM_TOK; j++) acc[j] = 0;
	int words = K / 8, groups = K / group;
	const uint32_t *row = codes + (int64_t)n * words;
	for (int w = lane; w < words; w += WARP) {
		uint32_t c = row[w];
		int g = w * 8 / group;
		float s = scales[(int64_t)n * groups + g], z = zs[(int64_t)n * groups + g];
		float wf[8];
#pragma unroll
		for (int i = 0; i < 8; i++) wf[i] = (float)((c >> (4 * i)) & 0xF) * s - z;
		mm_dot8(acc, x, K, t0, nt, w * 8, wf);
	}
	mm_store(y, acc, N, n, t0, nt, lane);
}

// add_bias adds b[n] to every row of y [T][N].
extern "C" __global__ void add_bias(float *y, const float *b, int32_t T, int32_t N) {
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (int64_t)T * N) y[i] += b[i % N];
}

// silu_mul computes out[i] = silu(gate[i])·up[i] (kernels.SiLUMul).
extern "C" __global__ void silu_mul(float *out, const float *gate, const float *up, int32_t n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		float g = gate[i];
		out[i] = (float)((double)g / (1.0 + exp(-(double)g))) * up[i];
	}
}

// silu_mul_rows is silu_mul over the fused gate-up product: row t of gu
// holds the gate's inter values then the up's; out [T][inter].
extern "C" __global__ void silu_mul_rows(float *out, const float *gu, int32_t inter, int32_t T) {
	int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < (int64_t)T * inter) {
		int64_t t = i / inter, j = i % inter;
		float g = gu[t * 2 * inter + j];
		out[i] = (float)((double)g / (1.0 + exp(-(double)g))) * gu[t * 2 * inter + inter + j];
	}
}

// qk_prep prepares one head of one token for attention, in one launch
// for all (kernels.RMSNorm per head, kernels.RoPE in its rotate-half form:
// for i < half, (lo, hi) = (x[i], x[i+half]) -> (lo·cos − hi·sin, hi·cos +
// lo·sin) with cos/sin from the table [positions][half] the CPU computes;
// then the cache store): block y < heads
// normalises query head y (RMSNorm with qnorm, exactly as the rmsnorm
// kernel with d = hd), rotates it (RoPE at the token's position) and
// writes it to qout [T][heads][hd]; block heads + h does the same to key
// head h with knorm and stores it, and value head h as it is, in bf16 at
// the token's cache slot. The sources are rows of the q/k/v products
// (separate, or columns of the fused product) with their row strides.
// grid (T, heads + kv_heads), block (hd rounded up to 32).
extern "C" __global__ void qk_prep(float *qout, __nv_bfloat16 *kc, __nv_bfloat16 *vc, const float *qsrc, const float *ksrc,
                                   const float *vsrc, int32_t qstride, int32_t kstride, int32_t vstride, const float *qnorm,
                                   const float *knorm, const float *cos_t, const float *sin_t, const int32_t *pos,
                                   const int32_t *slots, int32_t heads, int32_t kv_heads, int32_t hd, float eps) {
	__shared__ double part[32];
	__shared__ float xs[MAX_HEAD_DIM];
	const int t = blockIdx.x, y = blockIdx.y;
	const bool isq = y < heads;
	const int hh = isq ? y : y - heads;
	const float *xr = isq ? qsrc + (int64_t)t * qstride + (int64_t)hh * hd : ksrc + (int64_t)t * kstride + (int64_t)hh * hd;
	const float *w = isq ? qnorm : knorm;
	float r = rms_scale(xr, hd, eps, part);
	for (int i = threadIdx.x; i < hd; i += blockDim.x) xs[i] = w[i] * (xr[i] * r);
	__syncthreads();
	const int half = hd / 2;
	const int p = pos[t];
	const int64_t kvd = (int64_t)kv_heads * hd;
	for (int i = threadIdx.x; i < half; i += blockDim.x) {
		float c = cos_t[(int64_t)p * half + i], s = sin_t[(int64_t)p * half + i];
		float a = xs[i], b = xs[i + half];
		float lo = a * c - b * s, hi = b * c + a * s;
		if (isq) {
			float *qh = qout + ((int64_t)t * heads + hh) * hd;
			qh[i] = lo, qh[i + half] = hi;
		} else {
			__nv_bfloat16 *kh = kc + (int64_t)slots[t] * kvd + (int64_t)hh * hd;
			kh[i] = __float2bfloat16_rn(lo), kh[i + half] = __float2bfloat16_rn(hi);
		}
	}
	if (!isq) {
		const float *vr = vsrc + (int64_t)t * vstride + (int64_t)hh * hd;
		__nv_bfloat16 *vh = vc + (int64_t)slots[t] * kvd + (int64_t)hh * hd;
		for (int i = threadIdx.x; i < hd; i += blockDim.x) vh[i] = __float2bfloat16_rn(vr[i]);
	}
}

// add_inplace computes dst[i] += x[i].
extern "C" __global__ void add_inplace(float *dst, const float *x, int32_t n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) dst[i] += x[i];
}

// attention computes one query head of one token over the positions
// 0..pos[t] of its stream (kernels.Attend): softmax(scale·q·k)·v, reading
// the paged cache through the stream's block table, with an online
// softmax so that any length fits: each warp takes every 4th position and
// keeps a running maximum, sum and weighted value; the warps then merge.
// Lane l holds dimensions l, l+32, ... of the head (so a warp reads a key
// in coalesced 64-byte pieces). tables holds each stream's block table at
// table_off[t]. head_dim ≤ 256. grid (T, heads), block (128).
#define ATT_WARPS 4
#define ATT_MAXD MAX_HEAD_DIM
#define ATT_PER (ATT_MAXD / WARP)
extern "C" __global__ void attention(float *out, const float *q, const __nv_bfloat16 *kc, const __nv_bfloat16 *vc,
                                     const int32_t *tables, const int32_t *table_off, const int32_t *pos,
                                     int32_t heads, int32_t kv_heads, int32_t hd, int32_t block_size, float scale) {
	__shared__ float s_m[ATT_WARPS], s_l[ATT_WARPS];
	__shared__ float s_acc[ATT_WARPS][ATT_MAXD];
	int t = blockIdx.x, h = blockIdx.y;
	int warp = threadIdx.x / WARP, lane = threadIdx.x % WARP;
	int kvh = h / (heads / kv_heads);
	const float *qh = q + ((int64_t)t * heads + h) * hd;
	float qv[ATT_PER], acc[ATT_PER];
#pragma unroll
	for (int i = 0; i < ATT_PER; i++) {
		int d = i * WARP + lane;
		qv[i] = d < hd ? qh[d] * scale : 0;
		acc[i] = 0;
	}
	float m = -INFINITY, l = 0;
	const int32_t *table = tables + table_off[t];
	int n = pos[t] + 1;
	int64_t kvd = (int64_t)kv_heads * hd;
	for (int p = warp; p < n; p += ATT_WARPS) {
		int64_t slot = (int64_t)table[p / block_size] * block_size + p % block_size;
		const __nv_bfloat16 *kp = kc + slot * kvd + (int64_t)kvh * hd;
		const __nv_bfloat16 *vp = vc + slot * kvd + (int64_t)kvh * hd;
		float s = 0;
#pragma unroll
		for (int i = 0; i < ATT_PER; i++) {
			int d = i * WARP + lane;
			if (d < hd) s += qv[i] * bf16f(kp[d]);
		}
		s = warp_sum(s);
		float mn = fmaxf(m, s);
		float a = __expf(m - mn), e = __expf(s - mn);
		l = l * a + e;
#pragma unroll
		for (int i = 0; i < ATT_PER; i++) {
			int d = i * WARP + lane;
			if (d < hd) acc[i] = acc[i] * a + e * bf16f(vp[d]);
		}
		m = mn;
	}
	if (lane == 0) {
		s_m[warp] = m;
		s_l[warp] = l;
	}
#pragma unroll
	for (int i = 0; i < ATT_PER; i++) {
		int d = i * WARP + lane;
		if (d < hd) s_acc[warp][d] = acc[i];
	}
	__syncthreads();
	if (warp == 0) {
		float M = -INFINITY;
		for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, s_m[w]);
		float L = 0;
		float o[ATT_PER];
#pragma unroll
		for (int i = 0; i < ATT_PER; i++) o[i] = 0;
		for (int w = 0; w < ATT_WARPS; w++) {
			if (s_l[w] == 0) continue; // a warp that saw no position
			float a = __expf(s_m[w] - M);
			L += s_l[w] * a;
#pragma unroll
			for (int i = 0; i < ATT_PER; i++) {
				int d = i * WARP + lane;
				if (d < hd) o[i] += s_acc[w][d] * a;
			}
		}
		float *oh = out + ((int64_t)t * heads + h) * hd;
#pragma unroll
		for (int i = 0; i < ATT_PER; i++) {
			int d = i * WARP + lane;
			if (d < hd) oh[d] = o[i] / L;
		}
	}
}
