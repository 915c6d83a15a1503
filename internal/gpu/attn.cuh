// Attention on tensor cores, for heads of 128 dimensions: softmax(q·k)·v
// over a stream's paged bf16 cache, causal, for any number of new tokens —
// one (decode) or a prompt's chunk (prefill) — with the same arithmetic
// for every token whatever it is batched with. Included by kernels.cu;
// testdata/mmaemu runs it on the CPU too.
//
// Work. Tokens come in tiles of up to 16 consecutive tokens of one stream
// (the host lists them). Keys come in blocks of 16 positions, and blocks in
// chunks of 512 positions. A block of 4 warps takes one (tile, head, chunk):
// warp w takes the key blocks j ≡ w (mod 4) of the chunk, keeping for each
// of the tile's rows a running maximum m, sum l and unnormalised output o
// (an online softmax); the warps' states are merged in warp order and
// written as the chunk's state. attn_merge then merges a token's chunks in
// chunk order and divides by the sum. Which warp and which chunk a key
// belongs to depends on its position alone, so a token's result does not
// depend on the tile's other rows, the tile count or the number of blocks
// (grid.z) that share the chunks of a tile.
//
// Arithmetic. Scores: q·scale split into bf16 hi and lo (16 significant
// bits), keys exact bf16, mma.sync with float32 sums over the 8 tiles of 16
// dimensions, hi before lo. Probabilities p = exp(s − m) in float32, split
// the same way against exact bf16 values. Row maxima and sums over a row's
// four lanes: xor-1 then xor-2 shuffles, the same on every lane. A key past
// a row's position scores −inf and adds exactly nothing (p = 0, the
// rescale factor exp(0) = 1); keys past the tile's last position are read
// as zero, so that stale cache memory (NaN included) cannot leak in.

#define ATT_HD 128
#define ATT_KB 16       // keys per block
#define ATT_CHUNK 512   // keys per chunk
#define ATT_TILE 16     // tokens per tile
#define ATT_STATE (ATT_HD + 2) // floats of a chunk state: m, l, o[128]

__device__ __forceinline__ float quad_max(float v) {
	v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, 1));
	return fmaxf(v, __shfl_xor_sync(0xffffffff, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
	v += __shfl_xor_sync(0xffffffff, v, 1);
	return v + __shfl_xor_sync(0xffffffff, v, 2);
}

__device__ __forceinline__ uint32_t bf16_pair(const __nv_bfloat16 *p0, const __nv_bfloat16 *p1) {
	return uint32_t(*reinterpret_cast<const uint16_t *>(p0)) | uint32_t(*reinterpret_cast<const uint16_t *>(p1)) << 16;
}

// attn_chunk computes the chunk state of each row of a tile for one head.
// tiles: [T][2] (first token, rows; rows 0 for unused entries); states:
// the chunk states, token t's chunk c of head h at (soff[t] + c)·heads + h.
// grid (T, heads, any), block (128).
extern "C" __global__ void __launch_bounds__(128) attn_chunk(float *states, const float *q, const __nv_bfloat16 *kc, const __nv_bfloat16 *vc,
                                                             const int32_t *tiles, const int32_t *tables, const int32_t *table_off,
                                                             const int32_t *pos, const int32_t *soff, int32_t heads, int32_t kv_heads,
                                                             int32_t block_size, float scale) {
	__shared__ float s_m[4][ATT_TILE], s_l[4][ATT_TILE];
	__shared__ float s_o[4][ATT_TILE][ATT_HD];
	const int rows = tiles[2 * blockIdx.x + 1];
	if (rows == 0) return;
	const int t0 = tiles[2 * blockIdx.x], h = blockIdx.y;
	const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
	const int kvh = h / (heads / kv_heads);
	const int last = pos[t0 + rows - 1]; // the tile's last position: its rows' are ≤ it
	const int32_t *table = tables + table_off[t0];
	const int64_t kvd = (int64_t)kv_heads * ATT_HD;
	// This lane's two rows and their positions (rows past the tile: none).
	const int r0 = g, r1 = g + 8;
	const int p0 = r0 < rows ? pos[t0 + r0] : -1, p1 = r1 < rows ? pos[t0 + r1] : -1;

	// The tile's queries, scaled and split: 8 tiles of 16 dimensions.
	uint32_t qh[8][4], ql[8][4];
#pragma unroll
	for (int kt = 0; kt < 8; kt++) {
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const int r = (i & 1) ? r1 : r0, d = kt * 16 + 2 * c + (i >> 1) * 8;
			float x0 = 0, x1 = 0;
			if (r < rows) {
				const float *qr = q + ((int64_t)(t0 + r) * heads + h) * ATT_HD + d;
				x0 = qr[0] * scale, x1 = qr[1] * scale;
			}
			mma_split(x0, x1, qh[kt][i], ql[kt][i]);
		}
	}
	for (int chunk = blockIdx.z; chunk * ATT_CHUNK <= last; chunk += gridDim.z) {
		float m[2] = {-INFINITY, -INFINITY}, l[2] = {0, 0};
		float o[16][4];
#pragma unroll
		for (int dt = 0; dt < 16; dt++)
#pragma unroll
			for (int i = 0; i < 4; i++) o[dt][i] = 0;
		const int jend = min((chunk + 1) * ATT_CHUNK, last + 1);
		for (int j = chunk * ATT_CHUNK + warp * ATT_KB; j < jend; j += 4 * ATT_KB) {
			// Scores of the 16 keys j..j+15: two 8-key tiles.
			float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
#pragma unroll
			for (int nt = 0; nt < 2; nt++) {
				const int key = j + nt * 8 + g; // this lane's key (B column)
				const __nv_bfloat16 *kp = nullptr;
				if (key <= last) kp = kc + ((int64_t)table[key / block_size] * block_size + key % block_size) * kvd + (int64_t)kvh * ATT_HD;
#pragma unroll
				for (int kt = 0; kt < 8; kt++) {
					uint32_t b0 = 0, b1 = 0;
					if (kp) b0 = bf16_pair(kp + kt * 16 + 2 * c, kp + kt * 16 + 2 * c + 1), b1 = bf16_pair(kp + kt * 16 + 2 * c + 8, kp + kt * 16 + 2 * c + 9);
					mma_16816(s[nt], qh[kt], b0, b1);
					mma_16816(s[nt], ql[kt], b0, b1);
				}
			}
			// Mask, then the online softmax of each of the lane's two rows.
			float p[2][4];
#pragma unroll
			for (int hr = 0; hr < 2; hr++) { // row g (values 0, 1), row g+8 (2, 3)
				const int prow = hr ? p1 : p0;
				float mx = -INFINITY;
#pragma unroll
				for (int nt = 0; nt < 2; nt++)
#pragma unroll
					for (int e = 0; e < 2; e++) {
						const int key = j + nt * 8 + 2 * c + e;
						float &v = s[nt][2 * hr + e];
						if (key > prow) v = -INFINITY;
						mx = fmaxf(mx, v);
					}
				mx = quad_max(mx);
				const float mn = fmaxf(m[hr], mx);
				const float a = mn == -INFINITY ? 1.f : __expf(m[hr] - mn);
				float sum = 0;
#pragma unroll
				for (int nt = 0; nt < 2; nt++)
#pragma unroll
					for (int e = 0; e < 2; e++) {
						const float v = s[nt][2 * hr + e];
						const float pv = v == -INFINITY ? 0.f : __expf(v - mn);
						p[nt][2 * hr + e] = pv;
						sum += pv;
					}
				l[hr] = l[hr] * a + quad_sum(sum);
				m[hr] = mn;
#pragma unroll
				for (int dt = 0; dt < 16; dt++) o[dt][2 * hr] *= a, o[dt][2 * hr + 1] *= a;
			}
			// o += p·v: p (16 rows × 16 keys) is the A operand as the score
			// tiles lie, split; v (16 keys × 8 dimensions) the B operand.
			uint32_t ph[4], pl[4];
			mma_split(p[0][0], p[0][1], ph[0], pl[0]);
			mma_split(p[0][2], p[0][3], ph[1], pl[1]);
			mma_split(p[1][0], p[1][1], ph[2], pl[2]);
			mma_split(p[1][2], p[1][3], ph[3], pl[3]);
			const __nv_bfloat16 *vp[4]; // keys j+2c, j+2c+1, j+2c+8, j+2c+9
#pragma unroll
			for (int e = 0; e < 4; e++) {
				const int key = j + 2 * c + (e & 1) + (e >> 1) * 8;
				vp[e] = key <= last ? vc + ((int64_t)table[key / block_size] * block_size + key % block_size) * kvd + (int64_t)kvh * ATT_HD : nullptr;
			}
#pragma unroll
			for (int dt = 0; dt < 16; dt++) {
				const int d = dt * 8 + g;
				uint16_t v[4];
#pragma unroll
				for (int e = 0; e < 4; e++) v[e] = vp[e] ? *reinterpret_cast<const uint16_t *>(vp[e] + d) : 0;
				const uint32_t b0 = uint32_t(v[0]) | uint32_t(v[1]) << 16, b1 = uint32_t(v[2]) | uint32_t(v[3]) << 16;
				mma_16816(o[dt], ph, b0, b1);
				mma_16816(o[dt], pl, b0, b1);
			}
		}
		// Merge the four warps' states, in warp order.
		__syncthreads(); // the previous chunk's merge has read s_*
		if (c == 0) {
			s_m[warp][r0] = m[0], s_l[warp][r0] = l[0];
			s_m[warp][r1] = m[1], s_l[warp][r1] = l[1];
		}
#pragma unroll
		for (int dt = 0; dt < 16; dt++) {
			const int d = dt * 8 + 2 * c;
			s_o[warp][r0][d] = o[dt][0], s_o[warp][r0][d + 1] = o[dt][1];
			s_o[warp][r1][d] = o[dt][2], s_o[warp][r1][d + 1] = o[dt][3];
		}
		__syncthreads();
		for (int i = threadIdx.x; i < rows * ATT_HD; i += 128) {
			const int r = i / ATT_HD, d = i % ATT_HD, t = t0 + r;
			if (chunk * ATT_CHUNK > pos[t]) continue; // no key of this chunk is the row's
			float M = -INFINITY;
			for (int w = 0; w < 4; w++) M = fmaxf(M, s_m[w][r]);
			float L = 0, O = 0;
			for (int w = 0; w < 4; w++) {
				const float a = s_m[w][r] == -INFINITY ? 0.f : __expf(s_m[w][r] - M);
				L += s_l[w][r] * a;
				O += s_o[w][r][d] * a;
			}
			float *st = states + ((int64_t)(soff[t] + chunk) * heads + h) * ATT_STATE;
			if (d == 0) st[0] = M, st[1] = L;
			st[2 + d] = O;
		}
	}
}

// attn_merge merges token t's chunk states for head h in chunk order and
// writes its attention output: out = Σ o_c·e^(m_c−M) / Σ l_c·e^(m_c−M).
// grid (T, heads), block (128: one thread per dimension).
extern "C" __global__ void __launch_bounds__(128) attn_merge(float *out, const float *states, const int32_t *pos, const int32_t *soff, int32_t heads) {
	const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
	const int n = pos[t] / ATT_CHUNK + 1;
	const float *st = states + ((int64_t)soff[t] * heads + h) * ATT_STATE;
	const int64_t stride = (int64_t)heads * ATT_STATE;
	float M = -INFINITY;
	for (int c = 0; c < n; c++) M = fmaxf(M, st[c * stride]);
	float L = 0, O = 0;
	for (int c = 0; c < n; c++) {
		const float a = __expf(st[c * stride] - M);
		L += st[c * stride + 1] * a;
		O += st[c * stride + 2 + d] * a;
	}
	out[((int64_t)t * heads + h) * ATT_HD + d] = O / L;
}
