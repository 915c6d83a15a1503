package qwen3

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamguard/streamguard/internal/packfile"
	"github.com/streamguard/streamguard/internal/synth"
)

// packHidden loads dir with the repacked-weights paths and returns the
// final hidden states of a fixed sequence, bit patterns, and the load's
// use of the file.
func packHidden(t *testing.T, dir string, paths []string) ([]uint32, RepackCache) {
	t.Helper()
	m, w, err := OpenFolder(dir, Options{RepackCache: paths})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	outs, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: []int{1, 7, 42, 300, 5, 9}}}, ForwardOptions{Hidden: true})
	if err != nil {
		t.Fatal(err)
	}
	var bits []uint32
	for _, h := range outs[0].Hidden {
		for _, v := range h {
			bits = append(bits, math.Float32bits(v))
		}
	}
	return bits, w.Repack
}

// TestRepackCache: the first load repacks into the file, later loads map
// it, and a stale, corrupt or unwritable file falls back to repacking;
// every way gives the same hidden states, bit for bit.
func TestRepackCache(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	want, use := packHidden(t, dir, nil)
	if use.Path != "" || use.Mapped || use.Wrote || len(use.Notes) != 0 {
		t.Fatalf("no paths: %+v", use)
	}
	path := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	check := func(name string, paths []string, mapped, wrote bool, note string) {
		t.Helper()
		got, use := packHidden(t, dir, paths)
		if !slices.Equal(got, want) {
			t.Errorf("%s: hidden states differ from a load without the file", name)
		}
		if use.Mapped != mapped || use.Wrote != wrote {
			t.Errorf("%s: mapped %v wrote %v, want %v %v (%+v)", name, use.Mapped, use.Wrote, mapped, wrote, use)
		}
		if (mapped || wrote) && use.Path != paths[0] && use.Path != paths[len(paths)-1] {
			t.Errorf("%s: path %q", name, use.Path)
		}
		if notes := strings.Join(use.Notes, "; "); (note == "") != (notes == "") || !strings.Contains(notes, note) {
			t.Errorf("%s: notes %q, want %q", name, notes, note)
		}
	}
	check("first load", []string{path}, false, true, "")
	check("second load", []string{path}, true, false, "")

	// A data byte flipped: the CRC refuses the file, which is rebuilt.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hlen := binary.LittleEndian.Uint64(b[8:])
	first := (20 + int(hlen) + 4095) &^ 4095
	b[first+5] ^= 0x10
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	check("corrupt file", []string{path}, false, true, "CRC mismatch")
	check("after the rebuild", []string{path}, true, false, "")

	// A source file touched: the key no longer matches.
	st := filepath.Join(dir, "model.safetensors")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(st, later, later); err != nil {
		t.Fatal(err)
	}
	check("stale file", []string{path}, false, true, "stale")

	// The first path cannot be created (its folder is a file): the second
	// one is written, and then mapped.
	blocked := filepath.Join(dir, "config.json", "x.pack")
	other := filepath.Join(t.TempDir(), "cache", "awq-int4.pack")
	check("unwritable first path", []string{blocked, other}, false, true, "not written")
	check("mapped from the second path", []string{blocked, other}, true, false, "")

	// Nowhere to write: repacked in memory, said so.
	check("nowhere to write", []string{blocked}, false, false, "not written")
}

// TestRepackCacheRefusedModel: a model the load refuses leaves no file.
func TestRepackCacheRefusedModel(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	// Refused after the repacking: a KV-cache type that does not exist.
	path := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	if _, _, err := OpenFolder(dir, Options{RepackCache: []string{path}, KVCache: KVType(255)}); err == nil {
		t.Fatal("loaded with an unknown KV-cache type")
	}
	if m, _ := filepath.Glob(filepath.Join(dir, ".streamguard", "*")); len(m) != 0 {
		t.Errorf("a refused load left %v", m)
	}
	if _, err := packfile.Open(path, packfile.Key{}); !os.IsNotExist(err) {
		t.Errorf("Open after a refused load: %v", err)
	}
}

// TestAWQLoadReleasesCheckpoint: once an AWQ model is loaded over its
// repacked-weights file, none of its checkpoint stays mapped in — what the
// load read of it (norms, the embedding's checks), it copied — and steps
// read embedding rows without mapping them: after a first prefill has
// mapped in what a step reads in place (the heads), a prefill of 64 other
// tokens maps in nothing more. Results are those of a load that keeps no
// file (Linux: /proc/self/smaps says what is mapped).
func TestAWQLoadReleasesCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	want, _ := packHidden(t, dir, nil)
	for _, wrote := range []bool{true, false} {
		m, w, err := OpenFolder(dir, Options{RepackCache: []string{path}})
		if err != nil {
			t.Fatal(err)
		}
		resident := func() int {
			t.Helper()
			n := 0
			for _, f := range w.Set.Files() {
				r, err := f.Resident()
				if err != nil {
					t.Skipf("cannot see what is mapped in: %v", err)
				}
				n += r
			}
			return n
		}
		if n := resident(); n != 0 {
			t.Errorf("wrote %v: %d bytes of the checkpoint mapped in after the load", wrote, n)
		}
		prefill := func(ids []int) {
			t.Helper()
			if _, err := m.Forward([]Sequence{{Cache: m.NewCache(), IDs: ids}}, ForwardOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		prefill([]int{1, 2, 3, 5, 8})
		first := resident()
		ids := make([]int, 64)
		for i := range ids {
			ids[i] = 13 + i*(m.Config.VocabSize-20)/len(ids) // spread over the table
		}
		prefill(ids)
		if n := resident(); n != first {
			t.Errorf("wrote %v: %d bytes mapped in after a prefill, %d after 64 other tokens: embedding rows were mapped", wrote, first, n)
		}
		w.Close()
	}
	got, _ := packHidden(t, dir, []string{path})
	if !slices.Equal(got, want) {
		t.Error("hidden states differ from a load without the file")
	}
}
