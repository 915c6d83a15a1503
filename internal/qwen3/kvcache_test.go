package qwen3

import (
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

var kvTypes = []KVType{KVF32, KVBF16, KVInt8, KVInt4}

var realishCache sync.Map // layers -> *Model

// realish is a model at the 0.6B preset's per-layer shapes (hidden 1024,
// 16 query and 8 key/value heads of 128, MLP 3072, guard heads over 512)
// with random BF16 weights (RandomSource, seed 3) and the given number of
// layers, built once per layer count. Its head size is the real one, so
// prefill chunks run the four-query block kernels; the tiny model's 16
// does not.
func realish(t testing.TB, layers int) *Model {
	t.Helper()
	if m, ok := realishCache.Load(layers); ok {
		return m.(*Model)
	}
	cfg, err := config.Preset("qwen3guard-stream-0.6b")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NumHiddenLayers = layers
	src, err := RandomSource(cfg, safetensors.BF16, 3)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(src, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	realishCache.Store(layers, m)
	return m
}

// KV-cache accuracy. The bfloat16 and int8 caches are compared with the
// float32 cache on the same model and the same ids: the only difference
// between the runs is the rounding of every key and value as it is
// stored. What is compared is the final normed hidden state (the last
// layer's output, what the heads read) and the argmax of all four heads.
//
// Why these bounds. A bfloat16 element is within 2⁻⁹ of its float32 value
// (0.11% RMS relative error); an int8 element within half a step,
// max|x|/254 of its head vector, about 0.6% RMS of a head vector with a
// Gaussian spread, so int8 errs five to six times more than bfloat16; its
// scores also round the query to int8 codes (kernels/attend_i8.go), an
// error of the same size again.
// The error enters every layer's attention output and is carried and
// somewhat amplified by the MLPs (random weights keep each block's output
// as large as the residual stream it is added to). Measured on the 0.6B
// shapes (docs/KVCACHE.md has the figures): 4 random layers over 320
// positions, bf16 5.1e-3 per position at worst, int8 2.3e-2; the generated
// 28-layer AWQ model over 512 positions, bf16 5.2e-3, int8 2.5e-2. The
// bounds keep a margin of 1.6 to 2 over the worst of both:
//   - per position hidden relative L2: bf16 <= 1e-2 (also the project's
//     bound for bfloat16 activations, TestGolden), int8 <= 4e-2;
//   - over the whole sequence: bf16 <= 8e-3, int8 <= 3e-2;
//   - head argmax equal on >= 99% (bf16) and >= 97% (int8) of the
//     (position, head) pairs (measured 99.7% and 98.2% at worst);
//   - every disagreement a near-tie: the float32 run's margin between the
//     two classes below 5% (bf16) or 15% (int8) of the RMS of that head's
//     logits over the run (measured 1.3% and 8.3% at worst).
//
// The int4 cache is another matter: a 15-level code after the rotation
// errs by about 10% RMS of a head vector, sixteen times int8, and this
// random-weight model passes that on to the hidden state nearly in
// proportion (4 layers / 320 positions: hidden relative L2 0.345 at worst,
// 0.277 over the sequence, head argmax equal on 84.2%, disagreements up to
// 1.17 of a head's logit RMS, so not near-ties; the 28-layer model: 0.369,
// 0.305, 77.2%, 1.52). Its bounds (0.5, 0.4, 70%, 2.5) only pin those
// figures down against regressions; they are not a claim that int4 keeps
// verdicts, which only an evaluation on real weights can show
// (docs/KVCACHE.md).
type kvTolerance struct {
	position, sequence, agree, flip float64
}

var kvTolerances = map[KVType]kvTolerance{
	KVBF16: {position: 1e-2, sequence: 8e-3, agree: 0.99, flip: 0.05},
	KVInt8: {position: 4e-2, sequence: 3e-2, agree: 0.97, flip: 0.15},
	KVInt4: {position: 0.5, sequence: 0.4, agree: 0.7, flip: 2.5},
}

// kvAccuracy runs ids through m with each cache type, compares the narrow
// caches with float32 as described above, and logs the measured figures.
func kvAccuracy(t *testing.T, m *Model, ids []int) {
	t.Helper()
	outs := map[KVType]Output{}
	for _, kv := range kvTypes {
		o, err := m.Forward([]Sequence{{Cache: m.NewCacheOf(kv), IDs: ids}}, ForwardOptions{Hidden: true})
		if err != nil {
			t.Fatal(err)
		}
		outs[kv] = o[0]
	}
	ref := outs[KVF32]
	// The scale of each head's logits over the run: a disagreement counts
	// as a near-tie when the float32 run's margin is small beside it.
	var spread [4]float64
	for h, logits := range [][][]float32{ref.Risk, ref.Category, ref.QueryRisk, ref.QueryCategory} {
		var s float64
		n := 0
		for _, l := range logits {
			for _, x := range l {
				s += float64(x) * float64(x)
				n++
			}
		}
		spread[h] = math.Sqrt(s / float64(n))
	}
	for _, kv := range []KVType{KVBF16, KVInt8, KVInt4} {
		tol := kvTolerances[kv]
		got := outs[kv]
		var worst, mean, num, den, worstFlip float64
		heads, same := 0, 0
		for p := range ids {
			want := widen(ref.Hidden[p])
			e := relL2(got.Hidden[p], want)
			worst = max(worst, e)
			mean += e / float64(len(ids))
			if e > tol.position {
				t.Errorf("%v position %d: hidden relative L2 %.3g > %g", kv, p, e, tol.position)
			}
			for i, v := range want {
				d := float64(got.Hidden[p][i]) - v
				num, den = num+d*d, den+v*v
			}
			for h, pair := range [][2][]float32{{got.Risk[p], ref.Risk[p]}, {got.Category[p], ref.Category[p]},
				{got.QueryRisk[p], ref.QueryRisk[p]}, {got.QueryCategory[p], ref.QueryCategory[p]}} {
				heads++
				ga, wa := argmax32(pair[0]), argmax32(pair[1])
				if ga == wa {
					same++
					continue
				}
				margin := float64(pair[1][wa]-pair[1][ga]) / spread[h]
				worstFlip = max(worstFlip, margin)
				if margin >= tol.flip {
					t.Errorf("%v position %d head %d: argmax %d, float32 cache %d with a margin of %.3g of the head's logit RMS", kv, p, h, ga, wa, margin)
				}
			}
		}
		seq := math.Sqrt(num / den)
		if seq > tol.sequence {
			t.Errorf("%v: hidden relative L2 over the sequence %.3g > %g", kv, seq, tol.sequence)
		}
		if float64(same) < tol.agree*float64(heads) {
			t.Errorf("%v: head argmax agrees on %d of %d, want at least %.0f%%", kv, same, heads, 100*tol.agree)
		}
		t.Logf("%v cache against f32, %d positions: hidden relative L2 worst %.3g, mean %.3g, whole sequence %.3g; head argmax agrees %d/%d, largest f32 margin at a disagreement %.3g of the head's logit RMS",
			kv, len(ids), worst, mean, seq, same, heads, worstFlip)
	}
}

// TestKVCacheAccuracy compares the bfloat16 and int8 caches with the
// float32 cache over 320 positions of the 0.6B-shaped model (4 layers).
func TestKVCacheAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 0.6B-shaped model")
	}
	kvAccuracy(t, realish(t, 4), testIDs(320, 21))
}

// TestKVCacheAccuracyFull is the same comparison on `gen-model --preset
// qwen3guard-stream-0.6b --dtype awq --seed 1` (all 28 layers, the
// generator's weight distributions) over 512 positions. It writes a 0.5
// GiB model and runs minutes, so it runs only with STREAMGUARD_LONG=1.
func TestKVCacheAccuracyFull(t *testing.T) {
	if os.Getenv("STREAMGUARD_LONG") != "1" {
		t.Skip("set STREAMGUARD_LONG=1 to run")
	}
	kvAccuracy(t, generated06AWQ(t, Options{}), testIDs(512, 22))
}

// TestRealHeadSizeIsBitwiseInvariant runs the chunking and batching checks
// on the 0.6B-shaped model (the accuracy test's) for every cache type:
// with head size 128 and two query heads per key/value head, chunks of two
// or more rows take the four-query block kernels, which single tokens do
// not.
func TestRealHeadSizeIsBitwiseInvariant(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 0.6B-shaped model")
	}
	m := realish(t, 4)
	for _, kv := range kvTypes {
		t.Run(kv.String(), func(t *testing.T) {
			requireChunkingInvariant(t, m, kv, testIDs(37, 23), []int{1, 2, 5, 8, 16})
			requireBatchInvariant(t, m, kv)
		})
	}
}

// TestKVTypes: names, the bytes a position costs, and the cache sizes.
func TestKVTypes(t *testing.T) {
	for _, kv := range kvTypes {
		got, err := ParseKVType(kv.String())
		if err != nil || got != kv {
			t.Errorf("ParseKVType(%q) = %v, %v", kv.String(), got, err)
		}
	}
	if _, err := ParseKVType("fp8"); err == nil {
		t.Error("ParseKVType accepted fp8")
	}
	// 0.6B: 28 layers × 2 (k, v) × 8 heads × 128: float32 224 KiB,
	// bfloat16 112 KiB, int8 28 × 2 × 8 × (128 + 4) = 57.75 KiB, int4
	// 28 × 2 × 8 × (64 + 4) = 29.75 KiB.
	for kv, want := range map[KVType]int64{KVF32: 229376, KVBF16: 114688, KVInt8: 59136, KVInt4: 30464} {
		if got := kv.BytesPerPosition(28, 8, 128); got != want {
			t.Errorf("%v: %d bytes per position, want %d", kv, got, want)
		}
	}
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src := tiny(t, safetensors.F32).src
	for kv, want := range map[KVType]int64{KVF32: 512, KVBF16: 256, KVInt8: 2 * 2 * 2 * 20, KVInt4: 2 * 2 * 2 * 12} {
		m, err := Load(src, cfg, Options{KVCache: kv})
		if err != nil {
			t.Fatal(err)
		}
		c := m.NewCache()
		if m.BytesPerPosition() != want || c.BytesPerPosition() != want || c.Type() != kv || m.KVCache() != kv {
			t.Errorf("%v: model %d, cache %d bytes per position (type %v), want %d", kv, m.BytesPerPosition(), c.BytesPerPosition(), c.Type(), want)
		}
		if _, err := m.Forward([]Sequence{{Cache: c, IDs: testIDs(100, 4)}}, ForwardOptions{}); err != nil {
			t.Fatal(err)
		}
		if c.Cap() != 128 || c.Bytes() != 128*want {
			t.Errorf("%v after 100 tokens: cap %d, %d bytes", kv, c.Cap(), c.Bytes())
		}
	}
	if _, err := Load(src, cfg, Options{KVCache: KVType(255)}); err == nil {
		t.Error("Load accepted an unknown cache type")
	}
	// The 4-bit cache rotates head vectors by a Hadamard matrix, which
	// needs a power-of-two head size.
	odd := *cfg
	odd.HeadDim = 24
	oddSrc, err := RandomSource(&odd, safetensors.F32, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Load(oddSrc, &odd, Options{KVCache: KVInt4}); err == nil || !strings.Contains(err.Error(), "power of two") {
		t.Errorf("int4 cache with head_dim 24: %v", err)
	}
	if _, err := Load(oddSrc, &odd, Options{KVCache: KVInt8}); err != nil {
		t.Errorf("int8 cache with head_dim 24: %v", err)
	}
}

// TestCacheTypesShareABatch: caches of different types in one forward
// give each sequence what it gets alone, and regrowing a narrow cache
// keeps its contents (a prefix fed, the cache grown, the rest fed equals
// feeding all at once).
func TestCacheTypesShareABatch(t *testing.T) {
	m := tiny(t, safetensors.BF16).m
	ids := testIDs(150, 24) // crosses the first capacity of 128
	opts := ForwardOptions{Hidden: true}
	alone := map[KVType][]float32{}
	for _, kv := range kvTypes {
		o, err := m.Forward([]Sequence{{Cache: m.NewCacheOf(kv), IDs: ids}}, opts)
		if err != nil {
			t.Fatal(err)
		}
		alone[kv] = flatten(o...)
	}
	caches := make([]*Cache, len(kvTypes))
	seqs := make([]Sequence, len(kvTypes))
	for i, kv := range kvTypes {
		caches[i] = m.NewCacheOf(kv)
		seqs[i] = Sequence{Cache: caches[i], IDs: ids[:100]}
	}
	first, err := m.Forward(seqs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range seqs {
		seqs[i].IDs = ids[100:]
	}
	second, err := m.Forward(seqs, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, kv := range kvTypes {
		if caches[i].Cap() <= 128 {
			t.Fatalf("%v: cache did not regrow (cap %d)", kv, caches[i].Cap())
		}
		requireBitwise(t, fmt.Sprintf("%v batched with the other types", kv), flatten(first[i], second[i]), alone[kv])
	}
}

// TestPrefault: Prefault zeroes exactly the positions a cache has room for
// but does not hold: with every element poisoned and the filled positions
// written again, it gives back the contents of the fresh cache.
func TestPrefault(t *testing.T) {
	m := tiny(t, safetensors.BF16).m
	for _, kv := range kvTypes {
		c := m.NewCacheOf(kv)
		if err := c.FillRandom(100, 7); err != nil {
			t.Fatal(err)
		}
		if err := c.Reserve(300); err != nil {
			t.Fatal(err)
		}
		clone := func(s []kvStore) []kvStore {
			out := make([]kvStore, len(s))
			for i, x := range s {
				out[i] = kvStore{f32: slices.Clone(x.f32), bf16: slices.Clone(x.bf16), i8: slices.Clone(x.i8), i4: slices.Clone(x.i4), scale: slices.Clone(x.scale)}
			}
			return out
		}
		wantK, wantV := clone(c.k), clone(c.v)
		for _, stores := range [][]kvStore{c.k, c.v} {
			for i := range stores {
				s := &stores[i]
				fillSlice(s.f32, 1)
				fillSlice(s.bf16, 0x3f80)
				fillSlice(s.i8, 1)
				fillSlice(s.i4, 0x11)
				fillSlice(s.scale, 1)
			}
		}
		if err := c.FillRandom(100, 7); err != nil {
			t.Fatal(err)
		}
		c.Prefault()
		if !reflect.DeepEqual(c.k, wantK) || !reflect.DeepEqual(c.v, wantV) {
			t.Errorf("%v: contents after Prefault differ from the fresh cache's", kv)
		}
	}
}

func fillSlice[T any](s []T, v T) {
	for i := range s {
		s[i] = v
	}
}
