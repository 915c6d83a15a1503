package guard

import (
	"context"
	"path/filepath"
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
