package guard

import (
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/tokenizer"
)

var tinyOnce sync.Map // key -> *Model

// tinyModel is the tiny preset with random F32 weights, in memory, with
// the exact float32 KV cache; edit may change the config (it is part of
// the cache key).
func tinyModel(t testing.TB, key string, edit func(*config.Config)) *Model {
	return tinyModelKV(t, key, edit, qwen3.KVF32)
}

// kvCaches are the KV-cache types the invariance tests run with.
var kvCaches = []qwen3.KVType{qwen3.KVF32, qwen3.KVBF16, qwen3.KVInt8, qwen3.KVInt4}

// tinyModelKV is tinyModel with streams whose caches are of type kv.
func tinyModelKV(t testing.TB, key string, edit func(*config.Config), kv qwen3.KVType) *Model {
	return tinyModelOf(t, key, edit, kv, safetensors.F32)
}

// tinyModelOf is tinyModelKV with weights of type dtype.
func tinyModelOf(t testing.TB, key string, edit func(*config.Config), kv qwen3.KVType, dtype safetensors.DType) *Model {
	t.Helper()
	if kv != qwen3.KVF32 {
		key += "/kv-" + kv.String()
	}
	if dtype != safetensors.F32 {
		key += "/" + string(dtype)
	}
	if m, ok := tinyOnce.Load(key); ok {
		return m.(*Model)
	}
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(cfg)
	}
	src, err := qwen3.RandomSource(cfg, dtype, 7)
	if err != nil {
		t.Fatal(err)
	}
	net, err := qwen3.Load(src, cfg, qwen3.Options{KVCache: kv})
	if err != nil {
		t.Fatal(err)
	}
	m, err := wrap(net, nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tinyOnce.Store(key, m)
	return m
}

// writeTinyFolder writes the tiny preset as a model folder, leaving out the
// tensors named in drop.
func writeTinyFolder(t testing.TB, drop ...string) string {
	t.Helper()
	dir := t.TempDir()
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src, err := qwen3.RandomSource(cfg, safetensors.BF16, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range drop {
		delete(src, d)
	}
	var specs []safetensors.TensorSpec
	for _, n := range src.Names() {
		specs = append(specs, safetensors.TensorSpec{Name: n, DType: src[n].DType, Shape: src[n].Shape})
	}
	w, err := safetensors.Create(filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"}, specs)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range src.Names() {
		if err := w.WriteTensor(n, src[n].Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Write(dir); err != nil {
		t.Fatal(err)
	}
	tj, tc, err := tokenizer.Qwen3Files()
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "tokenizer.json"), string(tj))
	writeFile(t, filepath.Join(dir, "tokenizer_config.json"), string(tc))
	return dir
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// sameVerdicts compares token verdicts exactly (probabilities bitwise).
func sameVerdicts(t *testing.T, what string, got, want []TokenVerdict) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d verdicts, want %d", what, len(got), len(want))
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Index != w.Index || g.Position != w.Position || g.Risk != w.Risk ||
			g.Category != w.Category || g.NonSafe != w.NonSafe || g.Flagged != w.Flagged ||
			!bitsEqual(g.RiskProbs, w.RiskProbs) || !bitsEqual(g.CategoryProbs, w.CategoryProbs) {
			t.Errorf("%s: token %d: got %+v\nwant %+v", what, i, g, w)
			return
		}
	}
}

func bitsEqual(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
