// Products on tensor cores: y[t][n] = Σ_k x[t][k]·W[n][k] with
// mma.sync.m16n8k16 (bf16 inputs, float32 accumulation), for bf16 weights
// and AWQ INT4 weights. Included by kernels.cu; emu/ compiles it on the CPU
// too, with an emulated mma, to test the indexing where there is no GPU.
//
// Precision. Each activation is split into two bf16 values, hi = bf16(x)
// and lo = bf16(x − hi), which carry 16 of its 24 significant bits, and
// both meet the weight: tile by tile, acc += hi·w then acc += lo·w. An
// AWQ code becomes the exact bf16 integer q − z (no rounding: the scale
// stays out of the tensor core); each group of its k's is summed into a
// fresh accumulator, then out += s·acc (one float32 fma per group).
//
// Batch invariance. A token's outputs go through the same sequence of
// operations whatever the other rows of its tile, the tile's height (16
// or 64 tokens) or the token count: the k tiles in increasing order, hi
// before lo, groups in order. So a stream's logits are bitwise the same
// alone or batched, and decode (16-row tiles) and prefill (64-row tiles)
// agree bitwise too.
//
// Layouts, made at upload (gpu/frags.go), so that a lane loads exactly the
// registers it feeds to the mma, and a warp's loads are contiguous:
//   - the weights in stages of 128 k's, for each n-tile of 8 rows nt,
//     stage kb and lane l (g = l/4, c = l%4): bf16: 16 words, word j the
//     pair (k, k+1) of row 8nt+g at k = 128kb + 16(j/2) + 8(j%2) + 2c;
//     AWQ: 4 words, word c' holding for j < 4 the code of (row 8nt+g,
//     k_j) in nibble j and of (row, k_j + 1) in nibble j+4, with k_j =
//     128kb + 32c' + 16(j/2) + 8(j%2) + 2c;
//   - AWQ scales as stored (float16) [K/group][N], and −(128 + zero) as a
//     bf16 [K/group][N]: 4 bytes per group and row beside its 64 of codes.
// The activations are staged through shared memory, 128 k's at a time.

#define MMA_WARPS 4
#define MMA_KB 128                // k's per stage
#define MMA_AST (MMA_KB / 2 + 4)  // staged row stride in words: fragment loads hit 32 distinct banks

// mma_16816 is one tensor-core product: c += a·b for a 16×16 bf16 tile a
// (4 registers of pairs), a 16×8 bf16 tile b (2) and a 16×8 float tile c.
__device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#ifdef MMA_EMULATED
	mma_emulated(c, a, b0, b1);
#else
	asm volatile(
	    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
	    : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
	    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// A bf16 pair's bits and back, through memcpy (register moves on the GPU)
// rather than a pointer cast, which C++'s aliasing rules forbid.
__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v) {
	uint32_t u;
	memcpy(&u, &v, sizeof u);
	return u;
}
__device__ __forceinline__ __nv_bfloat162 bits_bf16x2(uint32_t u) {
	__nv_bfloat162 v;
	memcpy(&v, &u, sizeof v);
	return v;
}

// mma_split writes two activations as bf16 pairs hi = bf16(x) and
// lo = bf16(x − hi), first activation in the low half.
__device__ __forceinline__ void mma_split(float x0, float x1, uint32_t &hi, uint32_t &lo) {
	__nv_bfloat162 h = __floats2bfloat162_rn(x0, x1);
	hi = bf16x2_bits(h);
	lo = bf16x2_bits(__floats2bfloat162_rn(x0 - __low2float(h), x1 - __high2float(h)));
}

// mma_codes turns nibbles j and j+4 of an AWQ fragment word into the bf16
// pair (q_j − z, q_{j+4} − z), exactly: 0x4300 | q is the bf16 of 128 + q,
// and adding −(128 + z) (neg) leaves a small integer.
__device__ __forceinline__ uint32_t mma_codes(uint32_t word, int j, uint32_t neg) {
	uint32_t v = 0x43004300u | ((word >> (4 * j)) & 0x000F000Fu);
	return bf16x2_bits(__hfma2(bits_bf16x2(v), bits_bf16x2(0x3F803F80u), bits_bf16x2(neg)));
}

// mma_matmul computes the outputs of tile (blockIdx.y: BM tokens) ×
// (blockIdx.x: MMA_WARPS·NT n-tiles of 8), warp w taking NT n-tiles.
// AWQ selects the 4-bit weights (w, scales, neg) over bf16 (w). With
// accum, y += the product (y + v, the one rounding of a residual add)
// instead of y = it.
template <int BM, int NT, bool AWQ>
__device__ __forceinline__ void mma_matmul(float *y, const float *x, const uint32_t *w, const __half *scales,
                                           const uint16_t *neg, int32_t T, int32_t N, int32_t K, int32_t group, int32_t accum) {
	__shared__ uint32_t sa[2][BM][MMA_AST]; // the stage's activations: hi, lo
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
	const int t0 = blockIdx.y * BM;
	const int ntiles = N / 8, stages = K / MMA_KB;
	const int nt0 = (blockIdx.x * MMA_WARPS + warp) * NT;
	float acc[BM / 16][NT][4], out[BM / 16][NT][4];
#pragma unroll
	for (int mi = 0; mi < BM / 16; mi++)
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int i = 0; i < 4; i++) acc[mi][nt][i] = out[mi][nt][i] = 0;

	// This warp's weights, a stage ahead: bf16 16 words per n-tile, AWQ 4
	// (of 16). The next stage's loads are issued before this stage's
	// barriers and products, so that they are in flight meanwhile.
	uint32_t b[NT][16], bn[NT][16];
	auto load = [&](uint32_t (&dst)[NT][16], int kb) {
#pragma unroll
		for (int nt = 0; nt < NT; nt++) {
			const int tile = min(nt0 + nt, ntiles - 1); // a warp past N loads a real tile and stores nothing
			const uint4 *src = reinterpret_cast<const uint4 *>(w) + (((int64_t)tile * stages + kb) * 32 + lane) * (AWQ ? 1 : 4);
#pragma unroll
			for (int v = 0; v < (AWQ ? 1 : 4); v++) {
				uint4 u = src[v];
				dst[nt][4 * v] = u.x, dst[nt][4 * v + 1] = u.y, dst[nt][4 * v + 2] = u.z, dst[nt][4 * v + 3] = u.w;
			}
		}
	};
	load(bn, 0);
	for (int kb = 0; kb < stages; kb++) {
#pragma unroll
		for (int nt = 0; nt < NT; nt++)
#pragma unroll
			for (int i = 0; i < 16; i++) b[nt][i] = bn[nt][i];
		if (kb + 1 < stages) load(bn, kb + 1);
		__syncthreads(); // the previous stage's activations are read
		for (int i = threadIdx.x; i < BM * (MMA_KB / 4); i += MMA_WARPS * 32) {
			const int r = i / (MMA_KB / 4), v = i % (MMA_KB / 4);
			float4 f = make_float4(0, 0, 0, 0);
			if (t0 + r < T) f = *reinterpret_cast<const float4 *>(x + (int64_t)(t0 + r) * K + kb * MMA_KB + 4 * v);
			uint32_t h0, l0, h1, l1;
			mma_split(f.x, f.y, h0, l0);
			mma_split(f.z, f.w, h1, l1);
			sa[0][r][2 * v] = h0, sa[0][r][2 * v + 1] = h1;
			sa[1][r][2 * v] = l0, sa[1][r][2 * v + 1] = l1;
		}
		__syncthreads();
#pragma unroll
		for (int ch = 0; ch < 4; ch++) { // 32 k's: tiles 2ch and 2ch+1
			uint32_t bb[NT][4];
#pragma unroll
			for (int nt = 0; nt < NT; nt++) {
				if (AWQ) {
					const int row = min(nt0 + nt, ntiles - 1) * 8 + g;
					const uint32_t z = uint32_t(neg[(int64_t)((kb * MMA_KB + ch * 32) / group) * N + row]) * 0x10001u;
#pragma unroll
					for (int j = 0; j < 4; j++) bb[nt][j] = mma_codes(b[nt][ch], j, z);
				} else {
#pragma unroll
					for (int j = 0; j < 4; j++) bb[nt][j] = b[nt][4 * ch + j];
				}
			}
#pragma unroll
			for (int mi = 0; mi < BM / 16; mi++) {
#pragma unroll
				for (int kt = 0; kt < 2; kt++) {
					const int kw = ch * 16 + kt * 8 + c;
					uint32_t ah[4] = {sa[0][mi * 16 + g][kw], sa[0][mi * 16 + g + 8][kw], sa[0][mi * 16 + g][kw + 4], sa[0][mi * 16 + g + 8][kw + 4]};
					uint32_t al[4] = {sa[1][mi * 16 + g][kw], sa[1][mi * 16 + g + 8][kw], sa[1][mi * 16 + g][kw + 4], sa[1][mi * 16 + g + 8][kw + 4]};
#pragma unroll
					for (int nt = 0; nt < NT; nt++) {
						mma_16816(acc[mi][nt], ah, bb[nt][2 * kt], bb[nt][2 * kt + 1]);
						mma_16816(acc[mi][nt], al, bb[nt][2 * kt], bb[nt][2 * kt + 1]);
					}
				}
			}
			if (AWQ && (kb * MMA_KB + ch * 32 + 32) % group == 0) {
				const int64_t gi = (kb * MMA_KB + ch * 32) / group;
#pragma unroll
				for (int nt = 0; nt < NT; nt++) {
					const int col = min(nt0 + nt, ntiles - 1) * 8 + 2 * c;
					const float s0 = __half2float(scales[gi * N + col]), s1 = __half2float(scales[gi * N + col + 1]);
#pragma unroll
					for (int mi = 0; mi < BM / 16; mi++) {
						out[mi][nt][0] = fmaf(s0, acc[mi][nt][0], out[mi][nt][0]);
						out[mi][nt][1] = fmaf(s1, acc[mi][nt][1], out[mi][nt][1]);
						out[mi][nt][2] = fmaf(s0, acc[mi][nt][2], out[mi][nt][2]);
						out[mi][nt][3] = fmaf(s1, acc[mi][nt][3], out[mi][nt][3]);
#pragma unroll
						for (int i = 0; i < 4; i++) acc[mi][nt][i] = 0;
					}
				}
			}
		}
	}
#pragma unroll
	for (int nt = 0; nt < NT; nt++) {
		if (nt0 + nt >= ntiles) continue;
		const int col = (nt0 + nt) * 8 + 2 * c;
#pragma unroll
		for (int mi = 0; mi < BM / 16; mi++) {
#pragma unroll
			for (int h = 0; h < 2; h++) {
				const int t = t0 + mi * 16 + g + 8 * h;
				if (t < T) {
					float v0 = AWQ ? out[mi][nt][2 * h] : acc[mi][nt][2 * h];
					float v1 = AWQ ? out[mi][nt][2 * h + 1] : acc[mi][nt][2 * h + 1];
					float2 *dst = reinterpret_cast<float2 *>(y + (int64_t)t * N + col);
					if (accum) {
						const float2 old = *dst;
						v0 = old.x + v0, v1 = old.y + v1;
					}
					*dst = make_float2(v0, v1);
				}
			}
		}
	}
}

// mma_skinny is mma_matmul for steps of up to 16 tokens (decode), made for
// the memory's pace: no shared memory and no block-wide barrier, each warp
// one n-tile over the whole K, reading its activations straight from x
// (a few kilobytes, cached) and its weights PD stages at a time, all loads
// of a group issued before any is used, so that many are in flight. Each
// output sees exactly mma_matmul's sequence of operations (the same
// activation split, k tiles in order, hi before lo, the same group
// epilogue), so it is bitwise mma_matmul's.
template <bool AWQ, int PD>
__device__ __forceinline__ void mma_skinny(float *y, const float *x, const uint32_t *w, const __half *scales,
                                           const uint16_t *neg, int32_t T, int32_t N, int32_t K, int32_t group, int32_t accum) {
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
	const int tile = blockIdx.x * MMA_WARPS + warp, ntiles = N / 8, stages = K / MMA_KB;
	if (tile >= ntiles) return; // a whole warp: no barrier follows
	constexpr int V = AWQ ? 1 : 4; // uint4 per lane per stage
	const uint4 *src = reinterpret_cast<const uint4 *>(w) + (int64_t)tile * stages * 32 * V + lane * V;
	const float *x0 = g < T ? x + (int64_t)g * K : nullptr, *x1 = g + 8 < T ? x + (int64_t)(g + 8) * K : nullptr;
	float acc[4] = {0, 0, 0, 0}, out[4] = {0, 0, 0, 0};
	for (int kb0 = 0; kb0 < stages; kb0 += PD) {
		uint4 buf[PD][V];
#pragma unroll
		for (int p = 0; p < PD; p++)
#pragma unroll
			for (int v = 0; v < V; v++)
				if (kb0 + p < stages) buf[p][v] = src[(int64_t)(kb0 + p) * 32 * V + v];
#pragma unroll
		for (int p = 0; p < PD; p++) {
			const int kb = kb0 + p;
			if (kb >= stages) break;
			uint32_t b[16];
#pragma unroll
			for (int v = 0; v < V; v++)
				b[4 * v] = buf[p][v].x, b[4 * v + 1] = buf[p][v].y, b[4 * v + 2] = buf[p][v].z, b[4 * v + 3] = buf[p][v].w;
#pragma unroll
			for (int ch = 0; ch < 4; ch++) {
				uint32_t bb[4];
				if (AWQ) {
					const uint32_t z = uint32_t(neg[(int64_t)((kb * MMA_KB + ch * 32) / group) * N + tile * 8 + g]) * 0x10001u;
#pragma unroll
					for (int j = 0; j < 4; j++) bb[j] = mma_codes(b[ch], j, z);
				} else {
#pragma unroll
					for (int j = 0; j < 4; j++) bb[j] = b[4 * ch + j];
				}
#pragma unroll
				for (int kt = 0; kt < 2; kt++) {
					const int k = kb * MMA_KB + ch * 32 + kt * 16 + 2 * c;
					uint32_t ah[4], al[4];
					float2 v00 = x0 ? *reinterpret_cast<const float2 *>(x0 + k) : make_float2(0, 0);
					float2 v10 = x1 ? *reinterpret_cast<const float2 *>(x1 + k) : make_float2(0, 0);
					float2 v01 = x0 ? *reinterpret_cast<const float2 *>(x0 + k + 8) : make_float2(0, 0);
					float2 v11 = x1 ? *reinterpret_cast<const float2 *>(x1 + k + 8) : make_float2(0, 0);
					mma_split(v00.x, v00.y, ah[0], al[0]);
					mma_split(v10.x, v10.y, ah[1], al[1]);
					mma_split(v01.x, v01.y, ah[2], al[2]);
					mma_split(v11.x, v11.y, ah[3], al[3]);
					mma_16816(acc, ah, bb[2 * kt], bb[2 * kt + 1]);
					mma_16816(acc, al, bb[2 * kt], bb[2 * kt + 1]);
				}
				if (AWQ && (kb * MMA_KB + ch * 32 + 32) % group == 0) {
					const int64_t gi = (kb * MMA_KB + ch * 32) / group;
					const int col = tile * 8 + 2 * c;
					const float s0 = __half2float(scales[gi * N + col]), s1 = __half2float(scales[gi * N + col + 1]);
					out[0] = fmaf(s0, acc[0], out[0]);
					out[1] = fmaf(s1, acc[1], out[1]);
					out[2] = fmaf(s0, acc[2], out[2]);
					out[3] = fmaf(s1, acc[3], out[3]);
#pragma unroll
					for (int i = 0; i < 4; i++) acc[i] = 0;
				}
			}
		}
	}
	const int col = tile * 8 + 2 * c;
#pragma unroll
	for (int h = 0; h < 2; h++) {
		const int t = g + 8 * h;
		if (t < T) {
			float v0 = AWQ ? out[2 * h] : acc[2 * h];
			float v1 = AWQ ? out[2 * h + 1] : acc[2 * h + 1];
			float2 *dst = reinterpret_cast<float2 *>(y + (int64_t)t * N + col);
			if (accum) {
				const float2 old = *dst;
				v0 = old.x + v0, v1 = old.y + v1;
			}
			*dst = make_float2(v0, v1);
		}
	}
}

// The entry points: skinny (mma_skinny) for steps of up to 16 tokens,
// 16-token tiles and one n-tile per warp up to 64 (more blocks), 64-token
// tiles and two n-tiles per warp above (each weight read once per 64
// tokens). The skinny kernels' grid is (ceil(N/8 / MMA_WARPS)). grid (ceil(N/8 /
// (MMA_WARPS·NT)), ceil(T/BM)), block (MMA_WARPS·32).
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_bf16_m16(float *y, const float *x, const uint32_t *w, int32_t T, int32_t N, int32_t K, int32_t accum) {
	mma_matmul<16, 1, false>(y, x, w, nullptr, nullptr, T, N, K, MMA_KB, accum);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_bf16_m64(float *y, const float *x, const uint32_t *w, int32_t T, int32_t N, int32_t K, int32_t accum) {
	mma_matmul<64, 2, false>(y, x, w, nullptr, nullptr, T, N, K, MMA_KB, accum);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_awq_m16(float *y, const float *x, const uint32_t *w, const __half *scales, const uint16_t *neg,
                                                                       int32_t T, int32_t N, int32_t K, int32_t group, int32_t accum) {
	mma_matmul<16, 1, true>(y, x, w, scales, neg, T, N, K, group, accum);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_bf16_s(float *y, const float *x, const uint32_t *w, int32_t T, int32_t N, int32_t K, int32_t accum) {
	mma_skinny<false, 4>(y, x, w, nullptr, nullptr, T, N, K, MMA_KB, accum);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_awq_s(float *y, const float *x, const uint32_t *w, const __half *scales, const uint16_t *neg,
                                                                     int32_t T, int32_t N, int32_t K, int32_t group, int32_t accum) {
	mma_skinny<true, 8>(y, x, w, scales, neg, T, N, K, group, accum);
}
extern "C" __global__ void __launch_bounds__(MMA_WARPS * 32) mma_awq_m64(float *y, const float *x, const uint32_t *w, const __half *scales, const uint16_t *neg,
                                                                       int32_t T, int32_t N, int32_t K, int32_t group, int32_t accum) {
	mma_matmul<64, 2, true>(y, x, w, scales, neg, T, N, K, group, accum);
}
