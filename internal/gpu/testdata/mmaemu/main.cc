// Runs mma.cuh's and attn.cuh's kernels on the CPU (emu.h) for the Go
// tests TestMMAEmulated and TestAttentionEmulated: reads the launch and its
// buffers from stdin, writes the output to stdout.
//
// stdin, little-endian int32 op, then
//   op 0 (a product): int32 awq, bm (16, 64, or 1: the skinny kernel), T,
//     N, K, group, accum; float32 x[T*K];
//     uint32 w[...] (N*K/2 words for bf16, N*K/8 for AWQ); for AWQ float16
//     scales[K/group*N] and uint16 neg[K/group*N]. Writes float32 y[T*N]
//     (with accum, added to y[i] = (i % 97) / 4 − 12).
//   op 1 (attention): int32 T, heads, kv_heads, block_size, slots, splits,
//     states; float32 scale; int32 tiles[2T], tables_len, tables[...],
//     table_off[T], pos[T], soff[T]; float32 q[T*heads*128]; uint16
//     kc[slots*kv_heads*128], vc[same]. Writes float32 out[T*heads*128].
#include "emu.h"
#include "../../mma.cuh"
#include "../../attn.cuh"


template <typename T>
static std::vector<T> readn(size_t n) {
	std::vector<T> v(n);
	if (n && fread(v.data(), sizeof(T), n, stdin) != n) {
		fprintf(stderr, "short input\n");
		exit(2);
	}
	return v;
}

// launch runs kernel on a grid of blocks of MMA_WARPS warps (emu_launch).
template <typename F>
static void launch(dim3u grid, F kernel) { emu_launch(grid, MMA_WARPS * 32, kernel); }

static void product() {
	auto h = readn<int32_t>(7);
	const int awq = h[0], bm = h[1], T = h[2], N = h[3], K = h[4], group = h[5], accum = h[6];
	auto x = readn<float>(size_t(T) * K);
	auto w = readn<uint32_t>(size_t(N) * K / (awq ? 8 : 2));
	std::vector<__half> scales;
	std::vector<uint16_t> neg;
	if (awq) {
		scales = readn<__half>(size_t(K / group) * N);
		neg = readn<uint16_t>(size_t(K / group) * N);
	}
	std::vector<float> y(size_t(T) * N, NAN);
	if (accum)
		for (size_t i = 0; i < y.size(); i++) y[i] = float(i % 97) / 4 - 12;
	// bm 1 is the skinny kernel (T ≤ 16): one n-tile per warp, grid (ceil(N/8 / MMA_WARPS)).
	const int nt = bm == 64 ? 2 : 1;
	dim3u grid{unsigned(N / 8 + MMA_WARPS * nt - 1) / (MMA_WARPS * nt), bm == 1 ? 1u : unsigned(T + bm - 1) / bm, 1};
	float *Y = y.data();
	const float *X = x.data();
	const uint32_t *W = w.data();
	launch(grid, [&] {
		if (awq && bm == 16) mma_awq_m16(Y, X, W, scales.data(), neg.data(), T, N, K, group, accum);
		if (awq && bm == 64) mma_awq_m64(Y, X, W, scales.data(), neg.data(), T, N, K, group, accum);
		if (!awq && bm == 16) mma_bf16_m16(Y, X, W, T, N, K, accum);
		if (!awq && bm == 64) mma_bf16_m64(Y, X, W, T, N, K, accum);
		if (awq && bm == 1) mma_awq_s(Y, X, W, scales.data(), neg.data(), T, N, K, group, accum);
		if (!awq && bm == 1) mma_bf16_s(Y, X, W, T, N, K, accum);
	});
	fwrite(y.data(), sizeof(float), y.size(), stdout);
}

static void attention() {
	auto h = readn<int32_t>(7);
	const int T = h[0], heads = h[1], kvh = h[2], bs = h[3], slots = h[4], splits = h[5], nstates = h[6];
	const float scale = readn<float>(1)[0];
	auto tiles = readn<int32_t>(2 * size_t(T));
	const int ntab = readn<int32_t>(1)[0];
	auto tables = readn<int32_t>(ntab);
	auto toff = readn<int32_t>(T), pos = readn<int32_t>(T), soff = readn<int32_t>(T);
	auto q = readn<float>(size_t(T) * heads * ATT_HD);
	auto kc = readn<uint16_t>(size_t(slots) * kvh * ATT_HD), vc = readn<uint16_t>(size_t(slots) * kvh * ATT_HD);
	std::vector<float> states(size_t(nstates) * heads * ATT_STATE, NAN), out(size_t(T) * heads * ATT_HD, NAN);
	auto K = reinterpret_cast<const __nv_bfloat16 *>(kc.data());
	auto V = reinterpret_cast<const __nv_bfloat16 *>(vc.data());
	launch({unsigned(T), unsigned(heads), unsigned(splits)}, [&] {
		attn_chunk(states.data(), q.data(), K, V, tiles.data(), tables.data(), toff.data(), pos.data(), soff.data(), heads, kvh, bs, scale);
	});
	launch({unsigned(T), unsigned(heads), 1}, [&] { attn_merge(out.data(), states.data(), pos.data(), soff.data(), heads); });
	fwrite(out.data(), sizeof(float), out.size(), stdout);
}

int main() {
	const int op = readn<int32_t>(1)[0];
	if (op == 0) product();
	if (op == 1) attention();
	return 0;
}
