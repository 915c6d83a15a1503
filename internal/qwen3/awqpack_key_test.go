package qwen3

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/config"
	"github.com/streamguard/streamguard/internal/safetensors"
	"github.com/streamguard/streamguard/internal/synth"
)

// TestPackKeyOfReplacedFileRefused: the key describes the files the load
// has open. A model file renamed over (a sync, a hub download) between the
// load opening the checkpoint and computing the key would otherwise give
// the weights repacked from the old file the new file's key, and every
// later load of the new model would map them. This replays OpenFolder's
// steps (config.Load, safetensors.OpenDir, openAWQPack, finish) with the
// replacement between the open and openAWQPack: nothing is cached, and the
// next load repacks the new weights.
func TestPackKeyOfReplacedFileRefused(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := synth.Generate(other, synth.Options{Preset: "tiny", DType: "awq", Seed: 2}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ".streamguard", "awq-int4.pack")

	cfg, err := config.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	set, err := safetensors.OpenDir(dir) // the load maps the old weights
	if err != nil {
		t.Fatal(err)
	}
	// The model is updated in place while the load runs.
	if err := os.Rename(filepath.Join(other, "model.safetensors"), filepath.Join(dir, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	q := cfg.QuantizationConfig
	p := openAWQPack(set, q.GroupSize, q.ModulesToNotConvert, []string{path})
	if f := p.finish(true); f != nil {
		f.Close()
	}
	set.Close()
	if p.use.Wrote || p.use.Mapped || len(p.use.Notes) != 1 || !strings.Contains(p.use.Notes[0], "replaced while the model loaded") {
		t.Fatalf("a load whose file was replaced under it: %+v, want nothing cached and a note saying why", p.use)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a pack was left at %s (%v)", path, err)
	}

	// The model on disk is now the new one; load it twice.
	want, _ := packHidden(t, dir, nil) // repacked from the files on disk
	got, use := packHidden(t, dir, []string{path})
	if !use.Wrote || !slices.Equal(got, want) {
		t.Errorf("the next load (%+v): hidden states differ from a repack in memory", use)
	}
}

// TestPackKeyCatchesWholeSmallTensor: the key samples a page a MiB, and
// the first page of every tensor the pack is made from, because a packed
// tensor may be smaller than a MiB (at the 0.6B's shapes k_proj and v_proj
// codes are 512 KiB, scales 16 KiB) and lie between two of the stride's
// pages. The model has the 0.6B guard's projection shapes with one layer
// and a small vocabulary; the largest quantized tensor that none of the
// stride's pages meets is replaced whole by the same tensor of another
// quantization, the file's size and modification time kept (cp -p, rsync
// -a): the pack is stale and rebuilt, and the hidden states are those of
// a fresh repack.
func TestPackKeyCatchesWholeSmallTensor(t *testing.T) {
	cfg, err := config.Preset("qwen3guard-stream-0.6b")
	if err != nil {
		t.Fatal(err)
	}
	cfg.VocabSize, cfg.NumHiddenLayers = 1024, 1
	dir, other := t.TempDir(), t.TempDir()
	for i, d := range []string{dir, other} {
		if _, err := synth.Generate(d, synth.Options{Config: cfg, DType: "awq", Seed: uint64(1 + i)}); err != nil {
			t.Fatal(err)
		}
	}
	st := filepath.Join(dir, "model.safetensors")
	path := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	packHidden(t, dir, []string{path}) // writes the pack

	b, err := os.ReadFile(st)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := os.ReadFile(filepath.Join(other, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(st)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	start := 8 + int64(binary.LittleEndian.Uint64(b))
	size := int64(len(b))
	sampled := func(lo, hi int64) bool { // does [lo,hi) meet a sampled page?
		if lo < 1<<20 || hi > size-4096 {
			return true
		}
		for off := int64(1 << 20); off+4096 <= size; off += 1 << 20 {
			if lo < off+4096 && hi > off {
				return true
			}
		}
		return false
	}
	var pick string
	var lo, hi int64
	for _, name := range f.Names() {
		if !strings.HasSuffix(name, ".qweight") && !strings.HasSuffix(name, ".scales") {
			continue
		}
		info, _ := f.Info(name)
		a, z := start+info.Begin, start+info.End
		if !sampled(a, z) && z-a > hi-lo && !bytes.Equal(b[a:z], ob[a:z]) {
			pick, lo, hi = name, a, z
		}
	}
	if pick == "" {
		t.Fatal("setup: every quantized tensor meets one of the stride's pages in this layout; the test needs one that does not")
	}
	fi, err := os.Stat(st)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[lo:hi], ob[lo:hi]) // the other quantization's tensor, same shape
	if err := os.WriteFile(st, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(st, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	want, _ := packHidden(t, dir, nil)
	got, use := packHidden(t, dir, []string{path})
	if use.Mapped || !use.Wrote || len(use.Notes) != 1 || !strings.Contains(use.Notes[0], "contents changed") {
		t.Errorf("tensor %s (%d KiB) replaced whole, size and modification time kept: %+v, want the pack stale (contents changed) and rebuilt", pick, (hi-lo)>>10, use)
	}
	if !slices.Equal(got, want) {
		t.Errorf("tensor %s replaced: hidden states differ from a fresh repack", pick)
	}
}
