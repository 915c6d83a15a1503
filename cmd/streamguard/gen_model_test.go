package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGenModelForce checks that gen-model refuses a folder holding a
// checkpoint (exit 1, naming --force) and that --force replaces it without
// leaving stale shards behind.
func TestGenModelForce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if code, _, errs := run(t, "gen-model", "--preset", "tiny", "--shards", "2", "--out", dir); code != 0 {
		t.Fatalf("gen-model: exit %d %s", code, errs)
	}
	code, _, errs := run(t, "gen-model", "--preset", "tiny", "--out", dir)
	want := "streamguard gen-model: " + dir + " already holds a checkpoint (model-00001-of-00002.safetensors); remove it, choose another folder, or pass --force to overwrite it\n"
	if code != 1 || errs != want {
		t.Fatalf("gen-model over a checkpoint: exit %d\n got %q\nwant %q", code, errs, want)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := run(t, "gen-model", "--preset", "tiny", "--seed", "2", "--out", dir, "--force")
	if code != 0 || !strings.HasPrefix(out, "wrote "+dir+": tiny bf16 guard model, ") {
		t.Fatalf("gen-model --force: exit %d %q %q", code, out, errs)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	wantNames := []string{"config.json", "generation_config.json", "model.safetensors", "notes.txt", "tokenizer.json", "tokenizer_config.json"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("folder after --force: %v, want %v", names, wantNames)
	}
	if code, out, errs := run(t, "verify", dir); code != 0 {
		t.Errorf("verify after --force: exit %d\n%s\n%s", code, out, errs)
	}
}
