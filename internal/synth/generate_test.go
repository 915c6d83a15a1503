package synth

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/awq"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
)

func generate(t testing.TB, o Options) (string, *Result) {
	t.Helper()
	if o.Preset == "" {
		o.Preset = "tiny"
	}
	dir := filepath.Join(t.TempDir(), "m")
	res, err := Generate(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return dir, res
}

func openSet(t *testing.T, dir string) *safetensors.Set {
	t.Helper()
	s, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func floats(t *testing.T, s *safetensors.Set, name string) []float32 {
	t.Helper()
	x, err := s.Tensor(name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func meanStd(v []float32) (float64, float64) {
	var s, s2 float64
	for _, x := range v {
		s += float64(x)
		s2 += float64(x) * float64(x)
	}
	m := s / float64(len(v))
	return m, math.Sqrt(s2/float64(len(v)) - m*m)
}

// TestDeterministic: the bytes depend on the seed only, not on the number of
// workers (chunks are filled in a different interleaving).
func TestDeterministic(t *testing.T) {
	a, _ := generate(t, Options{DType: "awq", Seed: 5, Workers: 1})
	b, _ := generate(t, Options{DType: "awq", Seed: 5, Workers: 3})
	c, _ := generate(t, Options{DType: "awq", Seed: 6, Workers: 2})
	read := func(dir string) []byte {
		x, err := os.ReadFile(filepath.Join(dir, safetensors.SingleFile))
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	ab, bb, cb := read(a), read(b), read(c)
	if !bytes.Equal(ab, bb) {
		t.Fatal("same seed, different bytes")
	}
	sa, sc := openSet(t, a), openSet(t, c)
	for _, n := range sa.Names() {
		x, _ := sa.Tensor(n)
		y, _ := sc.Tensor(n)
		if bytes.Equal(x.Data, y.Data) {
			t.Errorf("%s identical for seeds 5 and 6", n)
		}
	}
	if len(ab) != len(cb) {
		t.Errorf("sizes differ: %d vs %d", len(ab), len(cb))
	}
	// Tensors of one folder differ from each other (per-name streams).
	x, _ := sa.Tensor("model.layers.0.self_attn.k_proj.qweight")
	y, _ := sa.Tensor("model.layers.0.self_attn.v_proj.qweight")
	if bytes.Equal(x.Data, y.Data) {
		t.Error("k_proj and v_proj share a stream")
	}
}

// TestFloatDistributions checks the documented scales on the f32 tiny
// model. Tolerances: relative std error ≈ 1/sqrt(2n); the smallest tensor
// checked has 2048 values (3% std error), so 10% bounds are > 3σ.
func TestFloatDistributions(t *testing.T) {
	dir, res := generate(t, Options{DType: "f32", Seed: 9, OutlierChannels: 3})
	s := openSet(t, dir)
	if len(res.OutlierChannels) != 3 {
		t.Fatalf("outliers %v", res.OutlierChannels)
	}
	boosted := func(c int) bool { return slices.Contains(res.OutlierChannels, c) }
	for _, n := range s.Names() {
		if !strings.HasSuffix(n, "norm.weight") {
			continue
		}
		v := floats(t, s, n)
		ones := 0
		for i, x := range v {
			lo, hi := float32(normLo), float32(normHi)
			if boosted(i) && (strings.Contains(n, "input_layernorm") || strings.Contains(n, "post_attention_layernorm")) {
				lo, hi = lo*OutlierFactor, hi*OutlierFactor
			}
			if x < lo || x >= hi {
				t.Errorf("%s[%d] = %v outside [%v, %v)", n, i, x, lo, hi)
			}
			if x == 1 {
				ones++
			}
		}
		if ones == len(v) {
			t.Errorf("%s is all ones", n)
		}
	}
	check := func(name string, want float64) {
		t.Helper()
		m, sd := meanStd(floats(t, s, name))
		if math.Abs(sd-want) > 0.1*want || math.Abs(m) > 0.1*want {
			t.Errorf("%s: mean %v std %v, want 0 and %v", name, m, sd, want)
		}
	}
	check("model.layers.0.self_attn.q_proj.weight", 1/math.Sqrt(64))
	check("model.layers.1.mlp.down_proj.weight", 1/math.Sqrt(128))
	check("risk_level_category_pre.weight", 1/math.Sqrt(64))
	check("query_risk_level_category_pre.weight", 1/math.Sqrt(64))
	// The 4 classifiers together: 23 rows of 32.
	var cls []float32
	for _, n := range []string{"risk_level_head.weight", "category_head.weight", "query_risk_level_head.weight", "query_category_head.weight"} {
		cls = append(cls, floats(t, s, n)...)
	}
	if _, sd := meanStd(cls); math.Abs(sd-3/math.Sqrt(32)) > 0.1*3/math.Sqrt(32) {
		t.Errorf("classifier std %v, want %v", sd, 3/math.Sqrt(32))
	}
	// Embedding: normal columns σ 0.05, outlier columns 20× that.
	emb := floats(t, s, "model.embed_tokens.weight")
	var plain, out []float32
	for i, x := range emb {
		if boosted(i % 64) {
			out = append(out, x)
		} else {
			plain = append(plain, x)
		}
	}
	if _, sd := meanStd(plain); math.Abs(sd-embeddingStd) > 0.01*embeddingStd {
		t.Errorf("embedding std %v", sd)
	}
	if _, sd := meanStd(out); math.Abs(sd-OutlierFactor*embeddingStd) > 0.01*OutlierFactor*embeddingStd {
		t.Errorf("outlier column std %v", sd)
	}
	if s.Metadata()["outlier_channels"] == "" || s.Metadata()["seed"] != "9" || s.Metadata()["dtype"] != "f32" || s.Metadata()["format"] != "pt" {
		t.Errorf("metadata %v", s.Metadata())
	}
}

// TestAWQDistributions dequantizes generated triplets (exercising
// awq.Dequantize on real layouts): σ ≈ 1/sqrt(in), zero points 7 or 8.
func TestAWQDistributions(t *testing.T) {
	dir, res := generate(t, Options{DType: "awq", Seed: 2})
	if res.Group != 64 {
		t.Fatalf("group %d, want 64 for tiny", res.Group)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.QuantizationConfig
	if !cfg.IsAWQ() || q.GroupSize != 64 || q.Bits != 4 || q.Version != "gemm" || q.ZeroPoint == nil || !*q.ZeroPoint ||
		!slices.Equal(q.ModulesToNotConvert, checkpoint.HeadModules()) || cfg.TorchDtype != "float16" {
		t.Fatalf("quantization_config %+v", q)
	}
	s := openSet(t, dir)
	for _, l := range []struct {
		module  string
		in, out int
	}{{"model.layers.0.self_attn.q_proj", 64, 64}, {"model.layers.1.mlp.down_proj", 128, 64}, {"model.layers.1.mlp.gate_proj", 64, 128}} {
		get := func(suffix string) *safetensors.Tensor {
			x, err := s.Tensor(l.module + suffix)
			if err != nil {
				t.Fatal(err)
			}
			return x
		}
		qw, _ := get(".qweight").I32()
		qz, _ := get(".qzeros").I32()
		sc, _ := get(".scales").U16()
		zs, err := awq.Unpack(qz, l.in/64, l.out)
		if err != nil {
			t.Fatal(err)
		}
		for _, z := range zs {
			if z != 7 && z != 8 {
				t.Fatalf("%s: zero point %d", l.module, z)
			}
		}
		w, err := awq.Dequantize(qw, qz, sc, l.in, l.out, 64)
		if err != nil {
			t.Fatal(err)
		}
		// 4096+ values: std error ≈ 1.1%; 10% bound.
		want := 1 / math.Sqrt(float64(l.in))
		if m, sd := meanStd(w); math.Abs(sd-want) > 0.1*want || math.Abs(m) > 0.1*want {
			t.Errorf("%s: dequantized mean %v std %v, want 0 and %v", l.module, m, sd, want)
		}
	}
	for _, n := range s.Names() {
		info, _, _ := s.Info(n)
		if !strings.HasSuffix(n, ".qweight") && !strings.HasSuffix(n, ".qzeros") && info.DType != safetensors.F16 {
			t.Errorf("%s is %s, want F16 in an AWQ bundle", n, info.DType)
		}
	}
}

func TestNoesis(t *testing.T) {
	dir, _ := generate(t, Options{Noesis: true, Seed: 4})
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.IsGuard() || cfg.Architectures[0] != "Qwen3ForCausalLM" || cfg.GuardInnerSize != 0 || cfg.ResponseRiskLevelMap != nil ||
		cfg.TieWordEmbeddings || !cfg.IsAWQ() || cfg.QuantizationConfig.ModulesToNotConvert != nil {
		t.Fatalf("config %+v", cfg)
	}
	s := openSet(t, dir)
	for _, n := range checkpoint.HeadNames {
		if s.Has(n) {
			t.Errorf("%s present", n)
		}
	}
	info, _, ok := s.Info("lm_head.weight")
	if !ok || info.DType != safetensors.F16 || !slices.Equal(info.Shape, []int{151936, 64}) {
		t.Fatalf("lm_head %+v", info)
	}
	if _, sd := meanStd(floats(t, s, "lm_head.weight")); math.Abs(sd-0.02) > 0.0005 {
		t.Errorf("lm_head std %v, want 0.02", sd)
	}
	if !s.Has("model.layers.0.self_attn.q_proj.qweight") || s.Metadata()["variant"] != "noesis" {
		t.Error("backbone not AWQ or metadata missing")
	}
}

func TestShards(t *testing.T) {
	dir, res := generate(t, Options{DType: "bf16", Shards: 4})
	if len(res.Files) != 4 || filepath.Base(res.Files[3]) != "model-00004-of-00004.safetensors" {
		t.Fatalf("files %v", res.Files)
	}
	s := openSet(t, dir)
	var sum int64
	for _, f := range s.Files() {
		if len(f.Names()) == 0 {
			t.Errorf("%s empty", f.Path())
		}
		sum += f.Header().DataSize()
	}
	if sum != res.Bytes || len(s.Names()) != res.Tensors {
		t.Errorf("%d bytes / %d tensors, result says %d / %d", sum, len(s.Names()), res.Bytes, res.Tensors)
	}
	if _, err := os.Stat(filepath.Join(dir, safetensors.IndexFile)); err != nil {
		t.Error(err)
	}
	if _, err := Generate(dir, Options{Preset: "tiny"}); err == nil || !strings.Contains(err.Error(), "already holds a checkpoint") {
		t.Errorf("regenerating into a full folder: %v", err)
	}
}

func TestAssignShards(t *testing.T) {
	for _, tc := range []struct {
		sizes []int64
		n     int
		want  []int
	}{
		{[]int64{10, 10, 10, 10}, 2, []int{0, 0, 1, 1}},
		{[]int64{100, 1, 1}, 3, []int{0, 1, 2}},
		{[]int64{1, 1, 100}, 2, []int{0, 0, 1}},
		{[]int64{5, 5, 5}, 1, []int{0, 0, 0}},
	} {
		plans := make([]*tensorPlan, len(tc.sizes))
		for i, b := range tc.sizes {
			plans[i] = &tensorPlan{bytes: b}
		}
		assignShards(plans, tc.n)
		var got []int
		for _, p := range plans {
			got = append(got, p.shard)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v into %d: %v, want %v", tc.sizes, tc.n, got, tc.want)
		}
	}
}

func TestGenerateErrors(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Preset: "huge"}, "unknown preset"},
		{Options{Preset: "tiny", DType: "int8"}, "unknown dtype"},
		{Options{Preset: "tiny", DType: "bf16", Noesis: true}, "--noesis"},
		{Options{Preset: "tiny", OutlierChannels: 65}, "outlier-channels"},
		{Options{Preset: "tiny", Shards: 1000}, "1000 shards"},
		{Options{Preset: "tiny", DType: "awq", Group: 128}, "group_size 128 does not divide in_features 64"},
		{Options{Preset: "tiny", DType: "awq", Group: 12}, "multiple of 8"},
		{Options{Preset: "tiny", Layers: 3}, "3 layers: the preset has 2"},
	} {
		_, err := Generate(filepath.Join(t.TempDir(), "m"), tc.o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestGenerateLayers cuts a preset's layers: the config says so and the
// checkpoint holds exactly those layers.
func TestGenerateLayers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := Generate(dir, Options{Preset: "qwen3guard-stream-0.6b", DType: "awq", Layers: 2}); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	_, err1 := set.Tensor("model.layers.1.mlp.down_proj.qweight")
	_, err2 := set.Tensor("model.layers.2.mlp.down_proj.qweight")
	has1, has2 := err1 == nil, err2 == nil
	if cfg.NumHiddenLayers != 2 || !has1 || has2 {
		t.Fatalf("num_hidden_layers %d, layer 1 present %v, layer 2 present %v; want 2, true, false", cfg.NumHiddenLayers, has1, has2)
	}
}

func BenchmarkGenerateTiny(b *testing.B) {
	base := b.TempDir()
	i := 0
	for b.Loop() {
		i++
		if _, err := Generate(filepath.Join(base, strings.Repeat("x", i)), Options{Preset: "tiny", DType: "bf16"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFillBF16(b *testing.B) {
	f := &floatFill{key: 1, dtype: safetensors.BF16, kind: symmetricDist, a: 0.1}
	dst := make([]byte, 1<<20)
	scratch := make([]float32, 1<<19)
	b.SetBytes(int64(len(dst)))
	for b.Loop() {
		f.fill(dst, 0, scratch)
	}
}

// TestWriteShardsError: a failure while writing (here the second shard
// cannot be created) is returned, and no goroutine is left blocked.
func TestWriteShardsError(t *testing.T) {
	o := Options{Preset: "tiny", DType: "bf16"}
	cfg, group, err := buildConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	plans, err := plan(cfg, o, group, nil)
	if err != nil {
		t.Fatal(err)
	}
	assignShards(plans, 2)
	dir := t.TempDir()
	err = writeShards(dir, []string{"a.safetensors", "missing-dir/b.safetensors"}, plans, nil, 2, nil)
	if err == nil || !strings.Contains(err.Error(), "missing-dir/b.safetensors") {
		t.Fatalf("error %v", err)
	}
}

// TestFusedFillMatches: the one-pass BF16 path gives the same bytes as the
// general path (forced here by an all-false outlier mask).
func TestFusedFillMatches(t *testing.T) {
	fused := &floatFill{key: 42, dtype: safetensors.BF16, kind: symmetricDist, a: 0.3}
	general := *fused
	general.boost = make([]bool, 7)
	a, b := make([]byte, 2000), make([]byte, 2000)
	scratch := make([]float32, 1000)
	fused.fill(a, 12345, scratch)
	general.fill(b, 12345, scratch)
	if !bytes.Equal(a, b) {
		t.Fatal("fused BF16 fill differs from the general path")
	}
}

// TestGenerateProgress: Progress sees growing byte counts that end at the
// total, which is the Result's tensor bytes.
func TestGenerateProgress(t *testing.T) {
	var last, calls int64
	var total int64 = -1
	res, err := Generate(t.TempDir(), Options{Preset: "tiny", DType: "bf16", Seed: 1, Progress: func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back: %d after %d", done, last)
		}
		last, total = done, tot
		calls++
	}})
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last != res.Bytes || total != res.Bytes {
		t.Errorf("progress: %d calls, last %d of %d; want %d of %d", calls, last, total, res.Bytes, res.Bytes)
	}
}
