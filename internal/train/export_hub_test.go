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

// hubSnapshot lays a generated tiny model (two shards, and a
// tokenizer_config.json) out as the hub cache does — blobs/ID, and
// snapshots/COMMIT/NAME linking to ../../blobs/ID, as `pull` and
// huggingface_hub write it — and returns the test's folder, the snapshot
// and the names of its files that are not weights or config.json.
func hubSnapshot(t *testing.T) (root, snap string, others []string) {
	t.Helper()
	root = t.TempDir()
	plain := filepath.Join(root, "plain")
	if _, err := synth.Generate(plain, synth.Options{Preset: "tiny", DType: "f32", Seed: 1, Shards: 2}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(plain, "tokenizer_config.json"), []byte(`{"x": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(root, "hub", "models--org--tiny")
	snap = filepath.Join(repo, "snapshots", strings.Repeat("a", 40))
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
		if n := e.Name(); !strings.HasSuffix(n, ".safetensors") && n != safetensors.IndexFile && n != "config.json" {
			others = append(others, n)
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
	return root, snap, others
}

// writeFrom writes a new model from the folder dir names (as train-heads
// --model does), into a new folder under root.
func writeFrom(t *testing.T, dir, out string) []OutputFile {
	t.Helper()
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer set.Close()
	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	files, err := writeModel(dir, out, set, cfg, nil, false)
	if err != nil {
		t.Fatalf("writeModel from %s: %v", dir, err)
	}
	return files
}

// TestWriteModelFromHubSnapshot: `train-heads --model ORG/NAME` writes
// from a hub snapshot, a folder of links. The new model is complete and
// readable: every file it lists readable from the output folder, the
// tokenizer files carried over, whatever spelling names the snapshot (a
// trailing slash, as shell completion writes it; a link to it); a link
// out of the repository is not followed.
func TestWriteModelFromHubSnapshot(t *testing.T) {
	root, snap, others := hubSnapshot(t)
	secret := filepath.Join(root, "secret.txt")
	if err := os.WriteFile(secret, []byte("a private file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(snap, "notes.txt")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "mymodel")
	if err := os.Symlink(snap, link); err != nil {
		t.Fatal(err)
	}
	if len(others) == 0 {
		t.Fatal("the snapshot has no tokenizer files to carry")
	}
	for i, dir := range []string{snap, snap + string(filepath.Separator), link} {
		out := filepath.Join(root, "out"+string(rune('0'+i)))
		for _, f := range writeFrom(t, dir, out) {
			if _, err := os.Stat(filepath.Join(out, f.Name)); err != nil {
				t.Errorf("%s: output file %s (%s) cannot be read: %v", dir, f.Name, f.How, err)
			}
		}
		for _, n := range others {
			if _, err := os.Stat(filepath.Join(out, n)); err != nil {
				t.Errorf("%s: the source has %s, the output does not: %v", dir, n, err)
			}
		}
		if _, err := os.Lstat(filepath.Join(out, "notes.txt")); err == nil {
			t.Errorf("%s: a link out of the hub repository was carried into the output", dir)
		}
		if s, err := safetensors.OpenDir(out); err != nil {
			t.Errorf("%s: the written model cannot be opened: %v", dir, err)
		} else {
			s.Close()
		}
	}
}
