package qwen3

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

var tinyCache sync.Map // dtype -> *tinyModel

type tinyModel struct {
	cfg *config.Config
	src MapSource
	m   *Model
}

// tiny returns the tiny preset with random weights in dtype, built once.
func tiny(t testing.TB, dtype safetensors.DType) *tinyModel {
	t.Helper()
	if v, ok := tinyCache.Load(dtype); ok {
		return v.(*tinyModel)
	}
	cfg, err := config.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	src, err := RandomSource(cfg, dtype, 1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(src, cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	tm := &tinyModel{cfg: cfg, src: src, m: m}
	tinyCache.Store(dtype, tm)
	return tm
}

// testIDs returns n deterministic ids spread over the vocabulary.
func testIDs(n, salt int) []int {
	ids := make([]int, n)
	x := uint32(2166136261 ^ salt)
	for i := range ids {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		ids[i] = int(x % 151936)
	}
	return ids
}

// generated06AWQ writes the 0.6B preset as a random AWQ checkpoint (seed
// 1) and opens it with opts; the files close when the test ends.
func generated06AWQ(t testing.TB, opts Options) *Model {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	if _, err := synth.Generate(dir, synth.Options{Preset: "qwen3guard-stream-0.6b", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, set, err := OpenFolder(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return m
}
