// Package guardtest writes synthetic Qwen3Guard-Stream model folders for
// the tests of code that uses package guard, as net/http/httptest serves
// handlers without a network: random weights at the real tensor names and
// shapes, the real Qwen3 tokenizer and the real guard configuration, so
// that loading, tokenizing, batching and every verdict's path are those of
// a real model while the verdicts themselves mean nothing. The same
// folders come from `streamguard gen-model`.
package guardtest

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// Options choose the model.
type Options struct {
	// Preset is the shape: "tiny" (the default: 2 layers, loads in
	// milliseconds), "qwen3guard-stream-0.6b", "qwen3guard-stream-4b" or
	// "qwen3guard-stream-8b".
	Preset string
	// DType is how the weights are stored: "bf16" (the default), "f16",
	// "f32", or "awq" (an AWQ INT4 backbone, as the quantized bundles).
	DType string
	// Seed picks the random weights: the same options write the same
	// files.
	Seed uint64
	// Layers, when not 0, cuts the preset's layer count: a model of the
	// real widths that a test can run quickly.
	Layers int
}

// WriteModel writes a model folder at dir, which must not hold a model
// already.
func WriteModel(dir string, o Options) error {
	if o.Preset == "" {
		o.Preset = "tiny"
	}
	if o.DType == "" {
		o.DType = "bf16"
	}
	if _, err := synth.Generate(dir, synth.Options{Preset: o.Preset, DType: o.DType, Seed: o.Seed, Layers: o.Layers}); err != nil {
		return fmt.Errorf("guardtest: %w", err)
	}
	return nil
}

// ModelDir writes a model into a folder of tb.TempDir() and returns it;
// a failure fails the test.
func ModelDir(tb testing.TB, o Options) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "model")
	if err := WriteModel(dir, o); err != nil {
		tb.Fatal(err)
	}
	return dir
}
