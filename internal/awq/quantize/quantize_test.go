package quantize

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/guard"
	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/guardhook"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// Small calibration so the tiny tests stay fast: 4 sequences of 64
// tokens, 64 of them scoring the scales.
func tinyOptions(src, out string) Options {
	return Options{Source: src, Out: out, Samples: 4, SeqLen: 64, SearchTokens: 64, Seed: 42, Version: "test"}
}

// Generated tiny folders are shared by the tests of this binary: each
// takes seconds to write on a busy machine.
var gen struct {
	mu   sync.Mutex
	root string
	dirs map[string]string
}

// generated returns the tiny-preset folder for o, writing it on first use.
func generated(t *testing.T, name string, o synth.Options) string {
	t.Helper()
	gen.mu.Lock()
	defer gen.mu.Unlock()
	if d, ok := gen.dirs[name]; ok {
		return d
	}
	if gen.root == "" {
		d, err := os.MkdirTemp("", "quantize-test-")
		if err != nil {
			t.Fatal(err)
		}
		gen.root, gen.dirs = d, map[string]string{}
	}
	d := filepath.Join(gen.root, name)
	o.Preset = "tiny"
	if _, err := synth.Generate(d, o); err != nil {
		t.Fatal(err)
	}
	gen.dirs[name] = d
	return d
}

// outlierModel is the tiny preset in BF16 with 4 activation outlier
// channels.
func outlierModel(t *testing.T) string {
	return generated(t, "outliers", synth.Options{DType: "bf16", Seed: 7, OutlierChannels: 4})
}

func TestMain(m *testing.M) {
	code := m.Run()
	if gen.root != "" {
		os.RemoveAll(gen.root)
	}
	os.Exit(code)
}

var quantized struct {
	mu  sync.Mutex
	res map[Method]*Result
}

// quantizedOutlier quantizes the outlier model once per method and test
// binary (tinyOptions, with the quality report).
func quantizedOutlier(t *testing.T, m Method) *Result {
	t.Helper()
	src := outlierModel(t)
	quantized.mu.Lock()
	defer quantized.mu.Unlock()
	if r, ok := quantized.res[m]; ok {
		return r
	}
	o := tinyOptions(src, filepath.Join(gen.root, "q-"+string(m)))
	o.Method = m
	res, err := Quantize(o)
	if err != nil {
		t.Fatalf("%s: %v", m, err)
	}
	if quantized.res == nil {
		quantized.res = map[Method]*Result{}
	}
	quantized.res[m] = res
	return res
}

// TestQuantizeTiny runs AWQ and RTN on the outlier model and checks the
// bundle: strict report OK, heads byte-identical to the source in BF16,
// quantization_config naming the heads, provenance metadata, model card,
// quality report; AWQ's output error must be below RTN's (the outlier
// channels are what AWQ's scales are for). The observed values are logged.
func TestQuantizeTiny(t *testing.T) {
	src := outlierModel(t)
	results := map[Method]*Result{}
	for _, m := range []Method{AWQ, RTN} {
		res := quantizedOutlier(t, m)
		results[m] = res
		if !res.Report.OK() {
			t.Fatalf("%s: report not OK: %v", m, res.Report.Problems)
		}
		checkBundle(t, src, res.Out, m)
		q := res.Quality
		if q == nil || q.Conversations != len(defaultHeldOut) || len(q.Heads) != 4 {
			t.Fatalf("%s: quality %+v", m, q)
		}
		t.Logf("%s: hidden rel err mean %.4f max %.4f; response risk agree %.3f KL %.3g; query risk KL %.3g",
			m, q.HiddenRelErrMean, q.HiddenRelErrMax, q.Heads[0].Agreement, q.Heads[0].KLMean, q.Heads[2].KLMean)
	}
	a, r := results[AWQ].Quality, results[RTN].Quality
	if !(a.HiddenRelErrMean < r.HiddenRelErrMean) {
		t.Errorf("AWQ hidden-state error %.4f is not below RTN's %.4f", a.HiddenRelErrMean, r.HiddenRelErrMean)
	}
	var klA, klR float64
	for i := range a.Heads {
		klA += a.Heads[i].KLMean
		klR += r.Heads[i].KLMean
	}
	if !(klA < klR) {
		t.Errorf("AWQ head KL %.4g is not below RTN's %.4g", klA, klR)
	}
	st := results[AWQ].LayerStats
	if len(st) != 2 || len(st[0].Ratios) != 3 || st[0].Ratios["o"] != 0 {
		t.Errorf("layer stats %+v: want attn, mlp and down groups (GQA: no v→o group)", st)
	}
	if results[AWQ].CalibTokens != 256 || results[AWQ].SearchTokens != 64 {
		t.Errorf("calibration %d tokens, search %d; want 256 and 64", results[AWQ].CalibTokens, results[AWQ].SearchTokens)
	}
}

// checkBundle inspects an output folder.
func checkBundle(t *testing.T, src, dir string, m Method) {
	t.Helper()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	q := cfg.QuantizationConfig
	if !cfg.IsGuard() || q == nil || q.QuantMethod != "awq" || q.Bits != 4 || q.GroupSize != 64 || q.ZeroPoint == nil || !*q.ZeroPoint ||
		q.Version != "gemm" || !slices.Equal(q.ModulesToNotConvert, checkpoint.HeadModules()) || cfg.TorchDtype != "float16" {
		t.Errorf("config: arch %v, quantization %+v, dtype %s", cfg.Architectures, q, cfg.TorchDtype)
	}
	out, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	in, err := safetensors.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	for _, n := range checkpoint.HeadNames {
		a, err1 := out.Tensor(n)
		b, err2 := in.Tensor(n)
		if err1 != nil || err2 != nil || a.DType != safetensors.BF16 || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("head %s not copied in source precision (%v %v)", n, err1, err2)
		}
	}
	if out.Has("lm_head.weight") {
		t.Error("bundle has an lm_head")
	}
	for _, n := range []string{"model.embed_tokens.weight", "model.norm.weight", "model.layers.0.input_layernorm.weight"} {
		if info, _, ok := out.Info(n); !ok || info.DType != safetensors.F16 {
			t.Errorf("%s: %+v, want F16", n, info)
		}
	}
	meta := out.Metadata()
	for k, want := range map[string]string{"quantizer": "streamguard quantize", "method": string(m), "streamguard_version": "test",
		"source": src, "group_size": "64", "seed": "42", "source_generator": "streamguard gen-model", "source_dtype": "bfloat16"} {
		if meta[k] != want {
			t.Errorf("metadata %s = %q, want %q", k, meta[k], want)
		}
	}
	if m == AWQ && !strings.HasPrefix(meta["calibration"], "built-in") {
		t.Errorf("calibration provenance %q", meta["calibration"])
	}
	card, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil || !bytes.Contains(card, []byte("8 guard heads are kept")) || !bytes.Contains(card, []byte("Quality against the source")) {
		t.Errorf("model card: %v\n%s", err, card)
	}
	for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "generation_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// The guard loads it and moderates.
	g, err := guard.Load(context.Background(), dir, guard.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, ok := guardhook.Network(g).Layers[0].MLP.Up.(*qwen3.AWQLinear); !ok {
		t.Errorf("up_proj loads as %T", guardhook.Network(g).Layers[0].MLP.Up)
	}
	res, err := g.Moderate(context.Background(), []guard.Message{{Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi there"}}, nil)
	if err != nil || res.Prompt == nil || len(res.Tokens) != 2 {
		t.Errorf("moderate: %v %+v", err, res)
	}
}

// TestQuantizeDeterministic: the same inputs give byte-identical weights
// (also with a progress writer and without the quality report).
func TestQuantizeDeterministic(t *testing.T) {
	first := quantizedOutlier(t, AWQ)
	o := tinyOptions(outlierModel(t), filepath.Join(t.TempDir(), "o"))
	o.SkipEval, o.Progress = true, &bytes.Buffer{}
	if _, err := Quantize(o); err != nil {
		t.Fatal(err)
	}
	a, err1 := os.ReadFile(filepath.Join(first.Out, "model.safetensors"))
	b, err2 := os.ReadFile(filepath.Join(o.Out, "model.safetensors"))
	if err1 != nil || err2 != nil || !bytes.Equal(a, b) {
		t.Errorf("two runs wrote different bytes (%v %v)", err1, err2)
	}
}

// TestQuantizeMeasure: a measurement run writes nothing and extrapolates.
func TestQuantizeMeasure(t *testing.T) {
	src := outlierModel(t)
	out := filepath.Join(t.TempDir(), "none")
	var log bytes.Buffer
	o := tinyOptions(src, out)
	o.Layers, o.Progress = 1, &log
	res, err := Quantize(o)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Measured || len(res.LayerStats) != 1 || res.TotalLayers != 2 || res.EstimatedSeconds <= 0 || res.Quality != nil {
		t.Errorf("measurement result %+v", res)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("measurement run created %s", out)
	}
	if !strings.Contains(log.String(), "layer 1/1 done") || !strings.Contains(log.String(), "ETA") {
		t.Errorf("progress output %q", log.String())
	}
}

// TestQuantizeRefuses covers sources and options the quantizer must not
// accept.
func TestQuantizeRefuses(t *testing.T) {
	base := t.TempDir()
	noesis := generated(t, "noesis", synth.Options{Noesis: true, Seed: 1})
	awqDir := generated(t, "awq", synth.Options{DType: "awq", Seed: 1})
	src := outlierModel(t)
	for name, c := range map[string]struct {
		o    Options
		want string
	}{
		"headless":      {tinyOptions(noesis, filepath.Join(base, "x1")), "not a complete Qwen3Guard-Stream model"},
		"quantized":     {tinyOptions(awqDir, filepath.Join(base, "x2")), "already AWQ-quantized"},
		"group":         {func() Options { o := tinyOptions(src, filepath.Join(base, "x3")); o.Group = 48; return o }(), "group size 48"},
		"method":        {func() Options { o := tinyOptions(src, filepath.Join(base, "x4")); o.Method = "gptq"; return o }(), "unknown method"},
		"out is source": {tinyOptions(src, src), "is the input folder"},
		"out holds one": {tinyOptions(src, awqDir), "already holds a checkpoint"},
	} {
		if _, err := Quantize(c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", name, err, c.want)
		}
	}
}

// TestQuantizeVOGroup uses a multi-head (not grouped-query) config, where
// v_proj and o_proj have the same shape, so the v→o scaling group runs
// and its scales are folded into v_proj's rows.
func TestQuantizeVOGroup(t *testing.T) {
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.NumKeyValueHeads = cfg.NumAttentionHeads // 4×16 = 64 = hidden
	src := filepath.Join(t.TempDir(), "mha")
	writeRandomModel(t, src, cfg)
	o := tinyOptions(src, filepath.Join(t.TempDir(), "out"))
	res, err := Quantize(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.LayerStats[0].Ratios["o"]; !ok {
		t.Errorf("no v→o group: %+v", res.LayerStats[0].Ratios)
	}
	if res.Quality.HiddenRelErrMean > 0.5 {
		t.Errorf("hidden error %.3f: folding into v_proj broke the model", res.Quality.HiddenRelErrMean)
	}
	t.Logf("MHA: ratios %v, hidden rel err %.4f", res.LayerStats[0].Ratios, res.Quality.HiddenRelErrMean)
}

// writeRandomModel writes a BF16 guard folder for cfg with random weights.
func writeRandomModel(t *testing.T, dir string, cfg *config.Config) {
	t.Helper()
	ms, err := qwen3.RandomSource(cfg, safetensors.BF16, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var ts []*safetensors.Tensor
	for _, n := range ms.Names() {
		ts = append(ts, ms[n])
	}
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}, ts); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := copySideFiles(dir, outlierModel(t)); err != nil {
		t.Fatal(err)
	}
}

// TestBundleShards: a bundle over the shard limit is split with an index
// that the reader follows.
func TestBundleShards(t *testing.T) {
	dir := t.TempDir()
	specs := []safetensors.TensorSpec{
		{Name: "a", DType: safetensors.F32, Shape: []int{4}},
		{Name: "b", DType: safetensors.F32, Shape: []int{4}},
		{Name: "c", DType: safetensors.F32, Shape: []int{2}},
	}
	bw := newBundleWriter(dir, specs, map[string]string{"format": "pt"}, 32)
	if len(bw.files) != 2 {
		t.Fatalf("files %v, want 2 shards", bw.files)
	}
	if err := bw.tensor("b", make([]byte, 16)); err == nil {
		t.Error("out-of-order tensor accepted")
	}
	for _, s := range specs {
		if err := bw.tensor(s.Name, bytes.Repeat([]byte{1}, int(specBytes(s)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := bw.close(); err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	if !slices.Equal(set.Names(), []string{"a", "b", "c"}) || len(set.Files()) != 2 {
		t.Errorf("read back %v in %d files", set.Names(), len(set.Files()))
	}
}

func TestQualityJSON(t *testing.T) {
	q := compare([]evalSeq{{ids: []int{1, 2, 3}, userEnd: 0, respFrom: 1, respTo: 3}},
		[]outputs{{heads: [4][][]float32{
			{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}, {{1, 0}, {1, 0}, {1, 0}}, {{1, 0, 0}, {1, 0, 0}, {1, 0, 0}}, {{0, 1}, {0, 1}, {0, 1}}},
			hidden: [][]float32{{1, 0}, {0, 2}, {3, 4}}}},
		[]outputs{{heads: [4][][]float32{
			{{1, 0, 0}, {0, 1, 0}, {1, 0, 0.5}}, {{1, 0}, {1, 0}, {1, 0}}, {{1, 0, 0}, {1, 0, 0}, {1, 0, 0}}, {{1, 0}, {0, 1}, {0, 1}}},
			hidden: [][]float32{{1, 0}, {0, 2}, {3, 4.5}}}})
	if q.Positions != 3 || q.Heads[0].Agreement != 2.0/3 || q.Heads[0].VerdictPositions != 2 || q.Heads[0].VerdictAgreement != 0.5 ||
		q.Heads[1].KLMax != 0 || q.Heads[3].VerdictAgreement != 0 || q.Heads[2].VerdictAgreement != 1 {
		b, _ := json.Marshal(q)
		t.Errorf("quality %s", b)
	}
	if want := 0.5 / 5.0; q.HiddenRelErrMax != want || q.HiddenRelErrMean != want/3 {
		t.Errorf("hidden errors %v %v, want max %v mean %v", q.HiddenRelErrMax, q.HiddenRelErrMean, want, want/3)
	}
}

func TestSearchLens(t *testing.T) {
	for _, c := range []struct {
		lens []int
		n    int
		want []int
	}{
		{[]int{64, 64, 64}, 128, []int{64, 64}},
		{[]int{64, 64, 64}, 1000, []int{64, 64, 64}},
		{[]int{64, 64}, 100, []int{64}},
		{[]int{256, 256}, 128, []int{128}},
		{[]int{256}, 0, []int{1}},
	} {
		if got := searchLens(c.lens, c.n); !slices.Equal(got, c.want) {
			t.Errorf("searchLens(%v, %d) = %v, want %v", c.lens, c.n, got, c.want)
		}
	}
}
