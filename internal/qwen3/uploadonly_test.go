package qwen3

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// TestUploadOnly loads an AWQ folder for a GPU: every tensor is still
// read and checked, each projection gives the checkpoint's tensors back
// through Source exactly as a CPU load's does, no repacked-weights file is
// written, and the CPU forward refuses to run.
func TestUploadOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	pack := filepath.Join(t.TempDir(), "pack", "awq-int4.pack")
	up, wu, err := OpenFolder(dir, Options{UploadOnly: true, RepackCache: []string{pack}})
	if err != nil {
		t.Fatal(err)
	}
	defer wu.Close()
	full, wf, err := OpenFolder(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	if !up.UploadOnly() || full.UploadOnly() {
		t.Fatalf("UploadOnly: %v and %v", up.UploadOnly(), full.UploadOnly())
	}
	if wu.Repack.Path != "" || wu.Repack.Wrote || wu.Repack.Mapped {
		t.Errorf("upload-only load used a repacked-weights file: %+v", wu.Repack)
	}
	n := 0
	for i, l := range up.Layers {
		for j, lin := range []Linear{l.Attn.Q, l.Attn.K, l.Attn.V, l.Attn.O, l.MLP.Gate, l.MLP.Up, l.MLP.Down} {
			a, ok := lin.(*AWQLinear)
			if !ok {
				t.Fatalf("layer %d projection %d: %T, want *AWQLinear", i, j, lin)
			}
			b := []Linear{full.Layers[i].Attn.Q, full.Layers[i].Attn.K, full.Layers[i].Attn.V, full.Layers[i].Attn.O,
				full.Layers[i].MLP.Gate, full.Layers[i].MLP.Up, full.Layers[i].MLP.Down}[j].(*AWQLinear)
			o1, i1 := a.Dims()
			if o2, i2 := b.Dims(); o1 != o2 || i1 != i2 {
				t.Fatalf("layer %d projection %d: %d×%d, CPU load %d×%d", i, j, o1, i1, o2, i2)
			}
			qw, qz, sc, g, err := a.Source()
			if err != nil {
				t.Fatal(err)
			}
			qw2, qz2, sc2, g2, err := b.Source()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(qw, qw2) || !reflect.DeepEqual(qz, qz2) || !reflect.DeepEqual(sc, sc2) || g != g2 {
				t.Fatalf("layer %d projection %d: Source differs from the CPU load's", i, j)
			}
			n++
		}
		if l.Attn.QKV != nil || l.MLP.GateUp != nil {
			t.Errorf("layer %d: fused projections on an upload-only model", i)
		}
	}
	if n == 0 {
		t.Fatal("no AWQ projections checked")
	}
	if _, err := up.Forward([]Sequence{{Cache: up.NewCache(), IDs: []int{1, 2}}}, ForwardOptions{}); err == nil || !strings.Contains(err.Error(), "UploadOnly") {
		t.Errorf("Forward on an upload-only model: %v", err)
	}
	if _, err := up.NewLayerRunner([]int{2}); err == nil {
		t.Error("NewLayerRunner on an upload-only model: no error")
	}
	if _, err := up.Finish(make([]float32, up.Hidden())); err == nil {
		t.Error("Finish on an upload-only model: no error")
	}

	// The strict checks still hold: a tensor of the wrong shape is refused.
	src, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bad := &renamedSource{Source: src, from: "model.layers.0.self_attn.q_proj.scales", to: "model.layers.0.self_attn.k_proj.scales"}
	if _, err := Load(bad, full.Config, Options{UploadOnly: true, Linear: awqSourceLoader(full.Config.QuantizationConfig.GroupSize, nil)}); err == nil || !strings.Contains(err.Error(), "q_proj.scales") {
		t.Errorf("upload-only load of a wrong-shaped scales tensor: %v", err)
	}
}

// renamedSource serves tensor to under the name from.
type renamedSource struct {
	Source
	from, to string
}

func (s *renamedSource) Tensor(name string) (*safetensors.Tensor, error) {
	if name == s.from {
		name = s.to
	}
	return s.Source.Tensor(name)
}
