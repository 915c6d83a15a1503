package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// TestSnapshotDirSpellings: the same hub snapshot named as users name
// folders — with a trailing slash (shell completion adds one), through a
// symbolic link to it, or as "." from inside it — carries its non-weight
// files (tokenizer, configs) into the new model, as the clean path does.
func TestSnapshotDirSpellings(t *testing.T) {
	root := t.TempDir()
	plain := filepath.Join(root, "plain")
	if _, err := synth.Generate(plain, synth.Options{Preset: "tiny", DType: "f32", Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(plain, "tokenizer_config.json"), []byte(`{"x": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(root, "hub", "models--org--tiny")
	snap := filepath.Join(repo, "snapshots", strings.Repeat("a", 40))
	for _, d := range []string{filepath.Join(repo, "blobs"), snap} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(plain)
	if err != nil {
		t.Fatal(err)
	}
	var others []string
	for i, e := range entries {
		if !strings.HasSuffix(e.Name(), ".safetensors") && e.Name() != safetensors.IndexFile && e.Name() != "config.json" {
			others = append(others, e.Name())
		}
		blob := filepath.Join(repo, "blobs", strings.Repeat("0", 39)+string(rune('a'+i)))
		if err := os.Rename(filepath.Join(plain, e.Name()), blob); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(snap, blob)
		if err := os.Symlink(rel, filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "mymodel")
	if err := os.Symlink(snap, link); err != nil {
		t.Fatal(err)
	}
	t.Logf("non-weight files of the snapshot: %v", others)
	for i, dir := range []string{snap, snap + string(filepath.Separator), link} {
		set, err := safetensors.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(root, "out"+string(rune('0'+i)))
		if _, err := writeModel(dir, out, set, cfg, nil, false); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		set.Close()
		var missing []string
		for _, n := range others {
			if _, err := os.Stat(filepath.Join(out, n)); err != nil {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			t.Errorf("--model %s: the new model lacks %v (silently not carried over)", dir, missing)
		}
	}
}
