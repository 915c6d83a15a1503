// A CPU stand-in for the NVIDIA driver (libcuda.so.1), for the Go tests of
// the GPU backend on machines without a GPU (TestStandInDriver). It exports
// the driver API entry points package cuda binds; "device memory" is host
// memory, and each kernel the backend launches is a plain C++ reference of
// that kernel's contract (what kernels.cu, mma.cuh and attn.cuh promise:
// layouts, masks, which output goes where), not a translation of its CUDA
// source. So it checks the Go side — uploads and their layouts, workspace
// offsets, strides, metadata, launch parameters, streams, graphs — end to
// end against the CPU engine; the CUDA kernels themselves are checked by
// the emulator (testdata/mmaemu) and on a GPU. Built with -DSTANDIN_SOURCE
// and source.cc (TestStandInDriverSource), it runs the kernels' own CUDA
// source instead of the references, compiled for the CPU.
//
// Graphs record launches (with copies of their parameters) and replay
// them; launches on a capturing stream do not run, as on a GPU, and a copy
// on it is refused. Allocations up to 256 MiB are filled with 0xFF bytes
// (NaN as float32, bf16 and f16), so that a kernel reading what nothing
// wrote shows, and every allocation ends next to an inaccessible page. The
// "GPU" has 3 GiB unless STREAMGUARD_STANDIN_MEMORY_GIB says otherwise.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/mman.h>

typedef int CUresult;
static const CUresult OK = 0, ERR_INVALID = 1, ERR_OOM = 2, ERR_NOT_FOUND = 500, ERR_CAPTURE = 900;

#ifdef STANDIN_SOURCE
#include "source.h"
#else
struct SourceKernel;
#endif

struct Dim { unsigned x, y, z; };
typedef void (*KernelFn)(void **p, Dim grid);
struct Kernel {
	const char *name;
	std::vector<size_t> sizes; // parameter sizes, for copying them into a graph
	KernelFn run;
	const SourceKernel *src = nullptr; // with -DSTANDIN_SOURCE: the CUDA source's kernel, run instead
};

template <typename T> static T P(void **p, int i) {
	T v;
	std::memcpy(&v, p[i], sizeof v);
	return v;
}
template <typename T> static T *PTR(void **p, int i) { return reinterpret_cast<T *>(P<uint64_t>(p, i)); }

static float bf2f(uint16_t h) {
	uint32_t u = uint32_t(h) << 16;
	float f;
	std::memcpy(&f, &u, 4);
	return f;
}
static uint16_t f2bf(float f) {
	uint32_t u;
	std::memcpy(&u, &f, 4);
	if ((u & 0x7FFFFFFF) > 0x7F800000) return 0x7FC0;
	return uint16_t((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
static float h2f(uint16_t h) {
	const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
	float f;
	if (exp == 0) f = std::ldexp(float(man), -24);
	else if (exp == 31) f = man ? NAN : INFINITY;
	else {
		uint32_t u = ((exp + 112) << 23) | (man << 13);
		std::memcpy(&f, &u, 4);
	}
	return sign ? -f : f;
}

// parallel runs f(i) for i in [0, n) on the machine's cores, or on this
// thread when work (a rough count of operations) is small.
template <typename F> static void parallel(int n, F f, double work = 1e9) {
	int w = work < 2e6 ? 1 : std::max(1, std::min<int>(std::thread::hardware_concurrency(), n));
	if (w == 1) {
		for (int j = 0; j < n; j++) f(j);
		return;
	}
	std::vector<std::thread> ts;
	for (int i = 0; i < w; i++)
		ts.emplace_back([&, i] {
			for (int j = i; j < n; j += w) f(j);
		});
	for (auto &t : ts) t.join();
}

// ---- weights, decoded once per buffer (weights never change after
// upload) into float32 [N][K]: from the tensor cores' fragment layouts
// (mma.cuh) or the row layouts of the other products.
static std::mutex cacheMu;
static std::map<uint64_t, std::vector<float>> decoded;

template <typename F> static const std::vector<float> &weights(const void *key, int N, int K, F at) {
	std::lock_guard<std::mutex> l(cacheMu);
	auto &v = decoded[uint64_t(key)];
	if (v.empty()) {
		v.resize(size_t(N) * K);
		for (int n = 0; n < N; n++)
			for (int k = 0; k < K; k++) v[size_t(n) * K + k] = at(n, k);
	}
	return v;
}

static const std::vector<float> &bf16Frags(const uint32_t *w, int N, int K) {
	const int stages = K / 128;
	return weights(w, N, K, [&](int n, int k) {
		const int nt = n / 8, g = n % 8, kb = k / 128, kk = k % 128;
		const int j = 2 * (kk / 16) + (kk % 16) / 8, c = (kk % 8) / 2, e = kk % 2;
		const uint32_t word = w[((size_t(nt) * stages + kb) * 32 + g * 4 + c) * 16 + j];
		return bf2f(uint16_t(word >> (16 * e)));
	});
}

// awqFrags decodes 4-bit codes: W[n][k] = scale · (q − zero), with
// −(128 + zero) as stored.
static const std::vector<float> &awqFrags(const uint32_t *w, const uint16_t *scales, const uint16_t *neg, int N, int K, int group) {
	const int stages = K / 128;
	return weights(w, N, K, [&](int n, int k) {
		const int nt = n / 8, g = n % 8, kb = k / 128, kk = k % 128;
		const int ch = kk / 32, r = kk % 32;
		const int j = 2 * (r / 16) + (r % 16) / 8, c = (r % 8) / 2, e = r % 2;
		const uint32_t word = w[((size_t(nt) * stages + kb) * 32 + g * 4 + c) * 4 + ch];
		const int q = (word >> (4 * (j + 4 * e))) & 0xF;
		const size_t gi = size_t(k / group) * N + n;
		return h2f(scales[gi]) * (float(q) + 128.f + bf2f(neg[gi]));
	});
}

// ---- reference kernels, one per entry point; parameters as in the CUDA
// sources.
static void embed(void **p, Dim grid, bool f16) {
	float *out = PTR<float>(p, 0);
	const uint16_t *table = PTR<uint16_t>(p, 1);
	const int32_t *ids = PTR<int32_t>(p, 2);
	const int H = P<int32_t>(p, 3);
	for (unsigned t = 0; t < grid.x; t++)
		for (int i = 0; i < H; i++) {
			const uint16_t b = table[size_t(ids[t]) * H + i];
			out[size_t(t) * H + i] = f16 ? h2f(b) : bf2f(b);
		}
}

static void rmsnormRow(float *out, const float *x, const float *w, int d, float eps) {
	double ss = 0;
	for (int i = 0; i < d; i++) ss += double(x[i]) * double(x[i]);
	const float r = float(1.0 / std::sqrt(ss / d + double(eps)));
	for (int i = 0; i < d; i++) out[i] = w[i] * (x[i] * r);
}

static void rmsnorm(void **p, Dim grid) {
	float *out = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1), *w = PTR<float>(p, 2);
	const int d = P<int32_t>(p, 3);
	const float eps = P<float>(p, 4);
	for (unsigned r = 0; r < grid.x; r++) rmsnormRow(out + size_t(r) * d, x + size_t(r) * d, w, d, eps);
}

// product: y[t][n] (+)= Σ_k x[t][k]·W[n][k], in float, eight partial sums
// (each output on its own: a batch does not change it).
static void product(float *y, const float *x, int T, int N, int K, bool accum, const std::vector<float> &W) {
	parallel(N, [&](int n) {
		const float *w = W.data() + size_t(n) * K;
		for (int t = 0; t < T; t++) {
			const float *xr = x + size_t(t) * K;
			float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
			int k = 0;
			for (; k + 8 <= K; k += 8)
				for (int i = 0; i < 8; i++) s[i] += xr[k + i] * w[k + i];
			for (; k < K; k++) s[0] += xr[k] * w[k];
			const float v = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
			y[size_t(t) * N + n] = accum ? y[size_t(t) * N + n] + v : v;
		}
	}, double(T) * N * K);
}

static void matmul16(void **p, bool f16) {
	float *y = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1);
	const uint16_t *W = PTR<uint16_t>(p, 2);
	const int T = P<int32_t>(p, 3), N = P<int32_t>(p, 4), K = P<int32_t>(p, 5);
	product(y, x, T, N, K, false, weights(W, N, K, [&](int n, int k) { return f16 ? h2f(W[size_t(n) * K + k]) : bf2f(W[size_t(n) * K + k]); }));
}

static void matmulAWQ(void **p, Dim) {
	float *y = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1);
	const uint32_t *codes = PTR<uint32_t>(p, 2);
	const float *scales = PTR<float>(p, 3), *zs = PTR<float>(p, 4);
	const int T = P<int32_t>(p, 5), N = P<int32_t>(p, 6), K = P<int32_t>(p, 7), group = P<int32_t>(p, 8);
	const int G = K / group;
	product(y, x, T, N, K, false, weights(codes, N, K, [&](int n, int k) {
		const int q = (codes[size_t(n) * (K / 8) + k / 8] >> (4 * (k % 8))) & 0xF;
		return float(q) * scales[size_t(n) * G + k / group] - zs[size_t(n) * G + k / group];
	}));
}

static void mmaBF16(void **p, Dim) {
	float *y = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1);
	const uint32_t *w = PTR<uint32_t>(p, 2);
	const int T = P<int32_t>(p, 3), N = P<int32_t>(p, 4), K = P<int32_t>(p, 5), accum = P<int32_t>(p, 6);
	product(y, x, T, N, K, accum, bf16Frags(w, N, K));
}

static void mmaAWQ(void **p, Dim) {
	float *y = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1);
	const uint32_t *w = PTR<uint32_t>(p, 2);
	const uint16_t *scales = PTR<uint16_t>(p, 3), *neg = PTR<uint16_t>(p, 4);
	const int T = P<int32_t>(p, 5), N = P<int32_t>(p, 6), K = P<int32_t>(p, 7), group = P<int32_t>(p, 8), accum = P<int32_t>(p, 9);
	product(y, x, T, N, K, accum, awqFrags(w, scales, neg, N, K, group));
}

static void addBias(void **p, Dim) {
	float *y = PTR<float>(p, 0);
	const float *b = PTR<float>(p, 1);
	const int T = P<int32_t>(p, 2), N = P<int32_t>(p, 3);
	for (int i = 0; i < T * N; i++) y[i] += b[i % N];
}

static float silu(float g) { return float(double(g) / (1.0 + std::exp(-double(g)))); }

static void siluMul(void **p, Dim) {
	float *out = PTR<float>(p, 0);
	const float *gate = PTR<float>(p, 1), *up = PTR<float>(p, 2);
	const int n = P<int32_t>(p, 3);
	for (int i = 0; i < n; i++) out[i] = silu(gate[i]) * up[i];
}

static void siluMulRows(void **p, Dim) {
	float *out = PTR<float>(p, 0);
	const float *gu = PTR<float>(p, 1);
	const int inter = P<int32_t>(p, 2), T = P<int32_t>(p, 3);
	for (int t = 0; t < T; t++)
		for (int j = 0; j < inter; j++) out[size_t(t) * inter + j] = silu(gu[size_t(t) * 2 * inter + j]) * gu[size_t(t) * 2 * inter + inter + j];
}

static void addInplace(void **p, Dim) {
	float *dst = PTR<float>(p, 0);
	const float *x = PTR<float>(p, 1);
	const int n = P<int32_t>(p, 2);
	for (int i = 0; i < n; i++) dst[i] += x[i];
}

static void qkPrep(void **p, Dim grid) {
	float *qout = PTR<float>(p, 0);
	uint16_t *kc = PTR<uint16_t>(p, 1), *vc = PTR<uint16_t>(p, 2);
	const float *qsrc = PTR<float>(p, 3), *ksrc = PTR<float>(p, 4), *vsrc = PTR<float>(p, 5);
	const int qst = P<int32_t>(p, 6), kst = P<int32_t>(p, 7), vst = P<int32_t>(p, 8);
	const float *qn = PTR<float>(p, 9), *kn = PTR<float>(p, 10), *cs = PTR<float>(p, 11), *sn = PTR<float>(p, 12);
	const int32_t *pos = PTR<int32_t>(p, 13), *slots = PTR<int32_t>(p, 14);
	const int heads = P<int32_t>(p, 15), kvh = P<int32_t>(p, 16), hd = P<int32_t>(p, 17);
	const float eps = P<float>(p, 18);
	const int half = hd / 2;
	std::vector<float> xs(hd);
	for (unsigned t = 0; t < grid.x; t++)
		for (int y = 0; y < heads + kvh; y++) {
			const bool isq = y < heads;
			const int h = isq ? y : y - heads;
			const float *x = isq ? qsrc + size_t(t) * qst + size_t(h) * hd : ksrc + size_t(t) * kst + size_t(h) * hd;
			rmsnormRow(xs.data(), x, isq ? qn : kn, hd, eps);
			const float *c = cs + size_t(pos[t]) * half, *s = sn + size_t(pos[t]) * half;
			for (int i = 0; i < half; i++) {
				const float a = xs[i], b = xs[i + half];
				const float lo = a * c[i] - b * s[i], hi = b * c[i] + a * s[i];
				if (isq) {
					float *q = qout + (size_t(t) * heads + h) * hd;
					q[i] = lo, q[i + half] = hi;
				} else {
					uint16_t *k = kc + size_t(slots[t]) * kvh * hd + size_t(h) * hd;
					k[i] = f2bf(lo), k[i + half] = f2bf(hi);
				}
			}
			if (!isq) {
				const float *v = vsrc + size_t(t) * vst + size_t(h) * hd;
				uint16_t *vd = vc + size_t(slots[t]) * kvh * hd + size_t(h) * hd;
				for (int i = 0; i < hd; i++) vd[i] = f2bf(v[i]);
			}
		}
}

// attend writes softmax(scale·q·k)·v over keys 0..last of one stream and
// head (keys through its block table), or, as a chunk state, over the keys
// of chunk c only: m, l and the unnormalised output.
static void attend(const float *q, const uint16_t *kc, const uint16_t *vc, const int32_t *table, int bs, int kvh, int hd, int kh,
                   int from, int to, float scale, double &m, double &l, std::vector<double> &o) {
	std::vector<double> s(to - from);
	m = -INFINITY;
	for (int k = from; k < to; k++) {
		const size_t slot = size_t(table[k / bs]) * bs + k % bs;
		const uint16_t *kp = kc + (slot * kvh + kh) * hd;
		double d = 0;
		for (int i = 0; i < hd; i++) d += double(q[i] * scale) * bf2f(kp[i]);
		s[k - from] = d;
		m = std::max(m, d);
	}
	l = 0;
	o.assign(hd, 0);
	for (int k = from; k < to; k++) {
		const size_t slot = size_t(table[k / bs]) * bs + k % bs;
		const uint16_t *vp = vc + (slot * kvh + kh) * hd;
		const double e = std::exp(s[k - from] - m);
		l += e;
		for (int i = 0; i < hd; i++) o[i] += e * bf2f(vp[i]);
	}
}

static void attention(void **p, Dim grid) {
	float *out = PTR<float>(p, 0);
	const float *q = PTR<float>(p, 1);
	const uint16_t *kc = PTR<uint16_t>(p, 2), *vc = PTR<uint16_t>(p, 3);
	const int32_t *tables = PTR<int32_t>(p, 4), *toff = PTR<int32_t>(p, 5), *pos = PTR<int32_t>(p, 6);
	const int heads = P<int32_t>(p, 7), kvh = P<int32_t>(p, 8), hd = P<int32_t>(p, 9), bs = P<int32_t>(p, 10);
	const float scale = P<float>(p, 11);
	parallel(int(grid.x), [&](int t) {
		std::vector<double> o;
		for (int h = 0; h < heads; h++) {
			double m, l;
			attend(q + (size_t(t) * heads + h) * hd, kc, vc, tables + toff[t], bs, kvh, hd, h / (heads / kvh), 0, pos[t] + 1, scale, m, l, o);
			for (int i = 0; i < hd; i++) out[(size_t(t) * heads + h) * hd + i] = float(o[i] / l);
		}
	});
}

static const int CHUNK = 512, HD = 128, STATE = HD + 2;

static void attnChunk(void **p, Dim grid) {
	float *states = PTR<float>(p, 0);
	const float *q = PTR<float>(p, 1);
	const uint16_t *kc = PTR<uint16_t>(p, 2), *vc = PTR<uint16_t>(p, 3);
	const int32_t *tiles = PTR<int32_t>(p, 4), *tables = PTR<int32_t>(p, 5), *toff = PTR<int32_t>(p, 6), *pos = PTR<int32_t>(p, 7),
	              *soff = PTR<int32_t>(p, 8);
	const int heads = P<int32_t>(p, 9), kvh = P<int32_t>(p, 10), bs = P<int32_t>(p, 11);
	const float scale = P<float>(p, 12);
	parallel(int(grid.x), [&](int tile) {
		const int t0 = tiles[2 * tile], rows = tiles[2 * tile + 1];
		std::vector<double> o;
		for (int r = 0; r < rows; r++) {
			const int t = t0 + r;
			for (int h = 0; h < heads; h++)
				for (int c = 0; c * CHUNK <= pos[t]; c++) {
					double m, l;
					attend(q + (size_t(t) * heads + h) * HD, kc, vc, tables + toff[t], bs, kvh, HD, h / (heads / kvh), c * CHUNK,
					       std::min((c + 1) * CHUNK, pos[t] + 1), scale, m, l, o);
					float *st = states + ((size_t(soff[t]) + c) * heads + h) * STATE;
					st[0] = float(m), st[1] = float(l);
					for (int i = 0; i < HD; i++) st[2 + i] = float(o[i]);
				}
		}
	});
}

static void attnMerge(void **p, Dim grid) {
	float *out = PTR<float>(p, 0);
	const float *states = PTR<float>(p, 1);
	const int32_t *pos = PTR<int32_t>(p, 2), *soff = PTR<int32_t>(p, 3);
	const int heads = P<int32_t>(p, 4);
	for (unsigned t = 0; t < grid.x; t++)
		for (int h = 0; h < heads; h++) {
			const int n = pos[t] / CHUNK + 1;
			double M = -INFINITY;
			for (int c = 0; c < n; c++) M = std::max(M, double(states[((size_t(soff[t]) + c) * heads + h) * STATE]));
			double L = 0;
			std::vector<double> O(HD, 0);
			for (int c = 0; c < n; c++) {
				const float *st = states + ((size_t(soff[t]) + c) * heads + h) * STATE;
				const double a = std::exp(st[0] - M);
				L += st[1] * a;
				for (int i = 0; i < HD; i++) O[i] += st[2 + i] * a;
			}
			for (int i = 0; i < HD; i++) out[(size_t(t) * heads + h) * HD + i] = float(O[i] / L);
		}
}

static std::vector<size_t> ptrs(int n, std::vector<size_t> rest) {
	std::vector<size_t> v(n, 8);
	v.insert(v.end(), rest.begin(), rest.end());
	return v;
}

static const Kernel kernels[] = {
    {"embed_bf16", ptrs(3, {4}), [](void **p, Dim g) { embed(p, g, false); }},
    {"embed_f16", ptrs(3, {4}), [](void **p, Dim g) { embed(p, g, true); }},
    {"rmsnorm", ptrs(3, {4, 4}), rmsnorm},
    {"matmul_bf16", ptrs(3, {4, 4, 4}), [](void **p, Dim) { matmul16(p, false); }},
    {"matmul_f16", ptrs(3, {4, 4, 4}), [](void **p, Dim) { matmul16(p, true); }},
    {"matmul_awq", ptrs(5, {4, 4, 4, 4}), matmulAWQ},
    {"add_bias", ptrs(2, {4, 4}), addBias},
    {"silu_mul", ptrs(3, {4}), siluMul},
    {"silu_mul_rows", ptrs(2, {4, 4}), siluMulRows},
    {"add_inplace", ptrs(2, {4}), addInplace},
    {"qk_prep", ptrs(6, {4, 4, 4, 8, 8, 8, 8, 8, 8, 4, 4, 4, 4}), qkPrep},
    {"attention", ptrs(7, {4, 4, 4, 4, 4}), attention},
    {"mma_bf16_m16", ptrs(3, {4, 4, 4, 4}), mmaBF16},
    {"mma_bf16_m64", ptrs(3, {4, 4, 4, 4}), mmaBF16},
    {"mma_bf16_s", ptrs(3, {4, 4, 4, 4}), mmaBF16},
    {"mma_awq_m16", ptrs(5, {4, 4, 4, 4, 4}), mmaAWQ},
    {"mma_awq_m64", ptrs(5, {4, 4, 4, 4, 4}), mmaAWQ},
    {"mma_awq_s", ptrs(5, {4, 4, 4, 4, 4}), mmaAWQ},
    {"attn_chunk", ptrs(9, {4, 4, 4, 4}), attnChunk},
    {"attn_merge", ptrs(4, {4}), attnMerge},
    // internal/cuda's test kernel: inc(float *p, uint32 n) adds 1 to each.
    {"inc", ptrs(1, {4}), [](void **p, Dim) {
	     float *x = PTR<float>(p, 0);
	     for (uint32_t i = 0, n = P<uint32_t>(p, 1); i < n; i++) x[i] += 1;
     }},
};

// ---- the driver API.
struct Launch {
	const Kernel *k;
	Dim grid, block;
	std::vector<std::vector<char>> params;
};
struct Stream {
	bool capturing = false;
	std::vector<Launch> rec;
};
struct Graph {
	std::vector<Launch> launches;
};

#ifdef STANDIN_SOURCE
// noteLaunched appends a kernel's name, the first time it runs, to the file
// STREAMGUARD_STANDIN_LAUNCHED names (if any): the test checks that the
// source kernels it means to cover all ran.
static void noteLaunched(const char *name) {
	static std::mutex mu;
	static std::vector<std::string> seen;
	const char *path = std::getenv("STREAMGUARD_STANDIN_LAUNCHED");
	if (!path) return;
	std::lock_guard<std::mutex> l(mu);
	for (auto &s : seen)
		if (s == name) return;
	seen.emplace_back(name);
	if (FILE *f = std::fopen(path, "a")) {
		std::fprintf(f, "%s\n", name);
		std::fclose(f);
	}
}
#endif

static void run(const Launch &l) {
	std::vector<void *> p;
	for (auto &v : l.params) p.push_back(const_cast<char *>(v.data()));
#ifdef STANDIN_SOURCE
	if (l.k->src) {
		noteLaunched(l.k->name);
		const unsigned g[3] = {l.grid.x, l.grid.y, l.grid.z}, b[3] = {l.block.x, l.block.y, l.block.z};
		l.k->src->run(p.data(), g, b);
		return;
	}
#endif
	l.k->run(p.data(), l.grid);
}

static std::mutex memMu;
static std::map<uint64_t, size_t> allocs;
static size_t used;
// The "GPU" memory: 3 GiB, or STREAMGUARD_STANDIN_MEMORY_GIB.
static const size_t total = [] {
	const char *v = std::getenv("STREAMGUARD_STANDIN_MEMORY_GIB");
	const long g = v ? std::atol(v) : 0;
	return size_t(g > 0 ? g : 3) << 30;
}();
static const size_t poisonMax = size_t(256) << 20; // larger allocations (a KV cache) are left as mmap gives them (zeros)

extern "C" {
CUresult cuInit(unsigned) { return OK; }
CUresult cuDriverGetVersion(int *v) { return *v = 12080, OK; }
CUresult cuGetErrorName(CUresult r, const char **s) {
	*s = r == ERR_OOM ? "CUDA_ERROR_OUT_OF_MEMORY" : r == ERR_NOT_FOUND ? "CUDA_ERROR_NOT_FOUND" : "CUDA_ERROR_STAND_IN";
	return OK;
}
CUresult cuGetErrorString(CUresult, const char **s) { return *s = "the CPU stand-in driver refused the call", OK; }
CUresult cuDeviceGetCount(int *n) { return *n = 1, OK; }
CUresult cuDeviceGet(int *d, int ord) { return ord == 0 ? (*d = 0, OK) : ERR_INVALID; }
CUresult cuDeviceGetName(char *name, int n, int) {
	std::strncpy(name, "CPU stand-in (test driver)", n);
	return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *b, int) { return *b = total, OK; }
CUresult cuDeviceGetAttribute(int *v, int attr, int) {
	switch (attr) {
	case 16: *v = 4; break;        // SMs
	case 36: *v = 1000000; break;  // memory clock, kHz
	case 37: *v = 256; break;      // bus width
	case 38: *v = 4 << 20; break;  // L2
	case 75: *v = 9; break;        // compute capability
	case 76: *v = 0; break;
	case 97: *v = 227 << 10; break;
	default: *v = 0;
	}
	return OK;
}
CUresult cuDevicePrimaryCtxRetain(void **ctx, int) { return *ctx = reinterpret_cast<void *>(1), OK; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxSetCurrent(void *) { return OK; }
CUresult cuCtxSynchronize() { return OK; }
CUresult cuMemGetInfo_v2(size_t *f, size_t *t) {
	std::lock_guard<std::mutex> l(memMu);
	*f = total - used, *t = total;
	return OK;
}
// An allocation is its own mapping, 256-byte aligned as the driver's are,
// ending at most 255 bytes before an inaccessible page: a kernel or copy
// that runs past the end of a buffer by more faults, as it may on a GPU,
// instead of reading its neighbour.
static const size_t pageBytes = 4096;
static size_t rounded(size_t n) { return (n + 255) / 256 * 256; }                            // the bytes handed out
static size_t mappedBytes(size_t n) { return rounded(n) / pageBytes * pageBytes + 2 * pageBytes; } // the mapping
CUresult cuMemAlloc_v2(uint64_t *p, size_t n) {
	std::lock_guard<std::mutex> l(memMu);
	if (n == 0 || used + n > total) return ERR_OOM;
	const size_t len = rounded(n), span = mappedBytes(n);
	char *base = static_cast<char *>(mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
	if (base == MAP_FAILED) return ERR_OOM;
	if (mprotect(base + span - pageBytes, pageBytes, PROT_NONE) != 0) {
		munmap(base, span);
		return ERR_OOM;
	}
	char *m = base + span - pageBytes - len;
	if (n <= poisonMax) std::memset(m, 0xFF, n);
	*p = reinterpret_cast<uint64_t>(m);
	allocs[*p] = n;
	used += n;
	return OK;
}
CUresult cuMemFree_v2(uint64_t p) {
	{
		std::lock_guard<std::mutex> l(cacheMu);
		decoded.erase(p);
	}
	std::lock_guard<std::mutex> l(memMu);
	auto it = allocs.find(p);
	if (it == allocs.end()) return ERR_INVALID;
	const size_t n = it->second, len = rounded(n), span = mappedBytes(n);
	used -= n;
	allocs.erase(it);
	munmap(reinterpret_cast<char *>(p) + len + pageBytes - span, span);
	return OK;
}
CUresult cuMemcpyHtoD_v2(uint64_t d, const void *s, size_t n) { return std::memcpy(reinterpret_cast<void *>(d), s, n), OK; }
CUresult cuMemcpyDtoH_v2(void *d, uint64_t s, size_t n) { return std::memcpy(d, reinterpret_cast<void *>(s), n), OK; }
CUresult cuMemcpyDtoD_v2(uint64_t d, uint64_t s, size_t n) { return std::memmove(reinterpret_cast<void *>(d), reinterpret_cast<void *>(s), n), OK; }
CUresult cuMemcpyHtoDAsync_v2(uint64_t d, const void *s, size_t n, Stream *st) { return st && st->capturing ? ERR_CAPTURE : cuMemcpyHtoD_v2(d, s, n); }
CUresult cuMemcpyDtoHAsync_v2(void *d, uint64_t s, size_t n, Stream *st) { return st && st->capturing ? ERR_CAPTURE : cuMemcpyDtoH_v2(d, s, n); }
CUresult cuModuleLoadDataEx(void **m, const void *image, unsigned, int *, void **) {
	// Real PTX only: the backend's kernels carry this header.
	if (!std::strstr(static_cast<const char *>(image), ".entry")) return 218; // CUDA_ERROR_INVALID_PTX
	return *m = reinterpret_cast<void *>(2), OK;
}
CUresult cuModuleUnload(void *) { return OK; }
CUresult cuModuleGetFunction(const Kernel **f, void *, const char *name) {
	const Kernel *ref = nullptr;
	for (auto &k : kernels)
		if (std::strcmp(k.name, name) == 0) ref = &k;
#ifdef STANDIN_SOURCE
	// The kernel's own code, with the parameter sizes of its signature;
	// the contract references' sizes must agree with them.
	if (const SourceKernel *src = sourceKernel(name)) {
		if (ref && ref->sizes != src->sizes) {
			std::fprintf(stderr, "stand-in: the reference of %s takes other parameters than its CUDA source\n", name);
			return ERR_INVALID;
		}
		static std::mutex mu;
		static std::deque<Kernel> bound;
		std::lock_guard<std::mutex> l(mu);
		for (auto &k : bound)
			if (k.src == src) return *f = &k, OK;
		bound.push_back(Kernel{src->name, src->sizes, nullptr, src});
		return *f = &bound.back(), OK;
	}
#endif
	if (ref) return *f = ref, OK;
	return ERR_NOT_FOUND;
}
CUresult cuLaunchKernel(const Kernel *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned,
                        Stream *st, void **params, void **) {
	Launch l{f, {gx, gy, gz}, {bx, by, bz}, {}};
	for (size_t i = 0; i < f->sizes.size(); i++) {
		const char *v = static_cast<const char *>(params[i]);
		l.params.emplace_back(v, v + f->sizes[i]);
	}
	if (st && st->capturing) st->rec.push_back(std::move(l));
	else run(l);
	return OK;
}
CUresult cuStreamCreate(Stream **s, unsigned) { return *s = new Stream, OK; }
CUresult cuStreamDestroy_v2(Stream *s) { return delete s, OK; }
CUresult cuStreamSynchronize(Stream *) { return OK; }
CUresult cuStreamBeginCapture_v2(Stream *s, int) {
	if (!s || s->capturing) return ERR_CAPTURE;
	s->capturing = true;
	s->rec.clear();
	return OK;
}
CUresult cuStreamEndCapture(Stream *s, Graph **g) {
	if (!s->capturing) return ERR_CAPTURE;
	s->capturing = false;
	*g = new Graph{std::move(s->rec)};
	s->rec.clear();
	return OK;
}
CUresult cuGraphInstantiateWithFlags(Graph **exec, Graph *g, unsigned long long) { return *exec = new Graph(*g), OK; }
CUresult cuGraphGetNodes(Graph *g, void **, size_t *n) { return *n = g->launches.size(), OK; }
CUresult cuGraphLaunch(Graph *exec, Stream *) {
	for (auto &l : exec->launches) run(l);
	return OK;
}
CUresult cuGraphExecDestroy(Graph *g) { return delete g, OK; }
CUresult cuGraphDestroy(Graph *g) { return delete g, OK; }
}
