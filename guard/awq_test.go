package guard

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/streamguard/streamguard/internal/qwen3"
	"github.com/streamguard/streamguard/internal/synth"
)

// TestLoadAWQFolder: an AWQ bundle loads through Load with its projections
// on the int4 kernels and the guard heads left in fp16.
func TestLoadAWQFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := Load(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	net := m.net
	if _, ok := net.Layers[1].MLP.Up.(*qwen3.AWQLinear); !ok {
		t.Errorf("up_proj is %T, want *qwen3.AWQLinear", net.Layers[1].MLP.Up)
	}
	if _, ok := net.Query.Risk.(*qwen3.F16Linear); !ok {
		t.Errorf("query risk head is %T, want *qwen3.F16Linear", net.Query.Risk)
	}
	res, err := m.Moderate(context.Background(), []Message{{Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi there"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 2 || res.Tokens[0].Text != "hi" || res.Tokens[1].Text != " there" {
		t.Errorf("tokens %+v", res.Tokens)
	}
}

// TestRepackCacheOption: by default the first load writes the repacked
// weights beside the model and the next maps them, with the same verdicts;
// "off" writes nothing; a folder gets one subfolder per model.
func TestRepackCacheOption(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	msgs := []Message{{Role: "user", Content: "hello"}, {Role: "assistant", Content: "hi there, how can I help?"}}
	load := func(opt string) (string, []float32) {
		t.Helper()
		m, err := Load(context.Background(), dir, Options{RepackCache: opt})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		res, err := m.Moderate(context.Background(), msgs, nil)
		if err != nil {
			t.Fatal(err)
		}
		risks := slices.Clone(res.Prompt.RiskProbs)
		for _, tv := range res.Tokens {
			risks = append(risks, tv.RiskProbs...)
		}
		return m.Info().RepackCache.String(), risks
	}
	off, want := load("off")
	if off != "" {
		t.Errorf("off: RepackCache %q, want empty", off)
	}
	if _, err := os.Stat(filepath.Join(dir, ".streamguard")); !os.IsNotExist(err) {
		t.Errorf("off wrote a .streamguard folder (%v)", err)
	}
	beside := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	for i, wantUse := range []string{"repacked, written to " + beside, "mapped " + beside} {
		use, got := load("")
		if use != wantUse {
			t.Errorf("default load %d: RepackCache %q, want %q", i+1, use, wantUse)
		}
		if !slices.Equal(got, want) {
			t.Errorf("default load %d: risk probabilities %v, want %v (repacking on every load)", i+1, got, want)
		}
	}
	shared := t.TempDir()
	use, _ := load(shared)
	matches, _ := filepath.Glob(filepath.Join(shared, "m-*", "awq-int4.pack"))
	if len(matches) != 1 || use != "repacked, written to "+matches[0] {
		t.Errorf("folder option: RepackCache %q, files %v", use, matches)
	}
}
