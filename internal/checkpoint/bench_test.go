package checkpoint_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/checkpoint"
	"github.com/streamguard/streamguard/internal/synth"
)

func BenchmarkReportTinyAWQ(b *testing.B) {
	dir := gen(b, synth.Options{DType: "awq"})
	for b.Loop() {
		if _, err := checkpoint.Report(dir); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReport1024Layers: a config claiming 1024 layers over a 2-layer
// checkpoint, the worst case MaxLayers allows.
func BenchmarkReport1024Layers(b *testing.B) {
	dir := gen(b, synth.Options{DType: "awq"})
	cfg := `{"num_hidden_layers": 1024, "hidden_size": 1, "vocab_size": 1, "intermediate_size": 1, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 1}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := checkpoint.Report(dir); err != nil {
			b.Fatal(err)
		}
	}
}
