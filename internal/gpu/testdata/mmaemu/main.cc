// Runs one of mma.cuh's kernels on the CPU (emu.h) for the Go test
// TestMMAEmulated: reads the launch and its buffers from stdin, writes y.
//
// stdin, little-endian: int32 awq, bm, T, N, K, group; float32 x[T*K];
// uint32 w[...] (N*K/2 words for bf16, N*K/8 for AWQ); for AWQ float32
// scales[K/group*N] and uint32 neg[K/group*N]. stdout: float32 y[T*N].
#include "emu.h"
#include "../../mma.cuh"

#include <cstdio>
#include <thread>
#include <vector>

template <typename T>
static std::vector<T> readn(size_t n) {
	std::vector<T> v(n);
	if (n && fread(v.data(), sizeof(T), n, stdin) != n) {
		fprintf(stderr, "short input\n");
		exit(2);
	}
	return v;
}

int main() {
	auto h = readn<int32_t>(6);
	const int awq = h[0], bm = h[1], T = h[2], N = h[3], K = h[4], group = h[5];
	auto x = readn<float>(size_t(T) * K);
	auto w = readn<uint32_t>(size_t(N) * K / (awq ? 8 : 2));
	std::vector<float> scales;
	std::vector<uint32_t> neg;
	if (awq) {
		scales = readn<float>(size_t(K / group) * N);
		neg = readn<uint32_t>(size_t(K / group) * N);
	}
	std::vector<float> y(size_t(T) * N, NAN);
	const int nt = bm == 16 ? 1 : 2;
	const unsigned gx = (N / 8 + MMA_WARPS * nt - 1) / (MMA_WARPS * nt), gy = (T + bm - 1) / bm;
	for (unsigned by = 0; by < gy; by++) {
		for (unsigned bx = 0; bx < gx; bx++) {
			std::barrier<> bar(MMA_WARPS * 32);
			std::vector<Warp> warps(MMA_WARPS);
			Block b{&bar, warps.data()};
			cur = &b;
			std::vector<std::thread> ts;
			for (unsigned t = 0; t < MMA_WARPS * 32; t++) {
				ts.emplace_back([&, t] {
					threadIdx.x = t, blockIdx.x = bx, blockIdx.y = by;
					float *Y = y.data();
					const float *X = x.data();
					const uint32_t *W = w.data();
					if (awq && bm == 16) mma_awq_m16(Y, X, W, scales.data(), neg.data(), T, N, K, group);
					if (awq && bm == 64) mma_awq_m64(Y, X, W, scales.data(), neg.data(), T, N, K, group);
					if (!awq && bm == 16) mma_bf16_m16(Y, X, W, T, N, K);
					if (!awq && bm == 64) mma_bf16_m64(Y, X, W, T, N, K);
				});
			}
			for (auto &t : ts) t.join();
		}
	}
	fwrite(y.data(), sizeof(float), y.size(), stdout);
	return 0;
}
