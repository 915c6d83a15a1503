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

// TestWriteModelFromHubSnapshot: a model pulled into the hub cache is a
// snapshot folder of relative symbolic links into ../../blobs (as `pull`
// and huggingface_hub make it), and `train-heads --model ORG/NAME` writes
// from that folder. The new model is complete and readable: every weight
// file it lists readable from the output folder, and the tokenizer files
// carried over; a link out of the repository is not followed.
func TestWriteModelFromHubSnapshot(t *testing.T) {
	root := t.TempDir()
	plain := filepath.Join(root, "plain")
	if _, err := synth.Generate(plain, synth.Options{Preset: "tiny", DType: "f32", Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	// The hub cache's layout: blobs/ID and snapshots/COMMIT/NAME -> ../../blobs/ID.
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
	for i, e := range entries {
		blob := filepath.Join(repo, "blobs", strings.Repeat("0", 39)+string(rune('a'+i)))
		if err := os.Rename(filepath.Join(plain, e.Name()), blob); err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(snap, blob)
		if err := os.Symlink(rel, filepath.Join(snap, e.Name())); err != nil {
			t.Fatal(err)
		}
	}

	secret := filepath.Join(root, "secret.txt")
	if err := os.WriteFile(secret, []byte("a private file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(snap, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(snap)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	cfg, err := config.Load(snap)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(root, "out")
	files, err := writeModel(snap, out, set, cfg, nil, false)
	if err != nil {
		t.Fatalf("writeModel: %v", err)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(out, f.Name)); err != nil {
			t.Errorf("output file %s (%s) cannot be read: %v", f.Name, f.How, err)
		}
	}
	for _, name := range []string{"tokenizer.json", "tokenizer_config.json"} {
		if _, err := os.Stat(filepath.Join(snap, name)); err != nil {
			continue // the source has none
		}
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("the source has %s, the output does not: %v", name, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(out, "notes.txt")); err == nil {
		t.Error("a link out of the hub repository was carried into the output")
	}
	if s, err := safetensors.OpenDir(out); err != nil {
		t.Errorf("the written model cannot be opened: %v", err)
	} else {
		s.Close()
	}
}
