package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/streamguard/streamguard/internal/synth"
)

// TestRepackCacheFlag: moderate on an AWQ folder says it wrote the
// repacked weights on the first run, is quiet when it maps them, and
// --repack-cache off writes nothing.
func TestRepackCacheFlag(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	args := []string{"moderate", "--model", dir, "--prompt", "Hi", "--response", "hello there"}
	pack := filepath.Join(dir, ".streamguard", "awq-int4.pack")

	code, out1, errs := run(t, append(args, "--repack-cache", "off")...)
	if code > 3 || strings.Contains(errs, "repack cache") {
		t.Fatalf("--repack-cache off: exit %d, stderr %q", code, errs)
	}
	if m, _ := filepath.Glob(pack); len(m) != 0 {
		t.Fatalf("--repack-cache off wrote %v", m)
	}
	code, out2, errs := run(t, args...)
	if want := "repack cache: repacked, written to " + pack + "\n"; code > 3 || !strings.Contains(errs, want) {
		t.Fatalf("first run: exit %d, stderr %q, want %q", code, errs, want)
	}
	code, out3, errs := run(t, args...)
	if code > 3 || strings.Contains(errs, "repack cache") {
		t.Fatalf("second run: exit %d, stderr %q (mapping is quiet)", code, errs)
	}
	if out1 != out2 || out2 != out3 {
		t.Errorf("verdicts differ between repacking and mapping:\n%s\n%s\n%s", out1, out2, out3)
	}
}

// TestPrepare: prepare writes the file once and then finds it mapped.
func TestPrepare(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	pack := filepath.Join(dir, ".streamguard", "awq-int4.pack")
	for _, want := range []string{"repacked, written to " + pack, "mapped " + pack} {
		code, out, errs := run(t, "prepare", "--model", dir)
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("prepare: exit %d, stdout %q, stderr %q; want %q", code, out, errs, want)
		}
		// Linux says how much of the file is mapped 2 MiB at a time.
		if runtime.GOOS == "linux" && !strings.HasSuffix(out, "% of it mapped 2 MiB at a time)\n") {
			t.Errorf("prepare: %q lacks how much of the file is mapped 2 MiB at a time", out)
		}
	}
	if code, _, errs := run(t, "prepare", "--model", dir, "--repack-cache", "off"); code != 2 || !strings.Contains(errs, "nothing to prepare") {
		t.Errorf("prepare --repack-cache off: exit %d, %q", code, errs)
	}

	// --json: the same facts as one object, with the names docs/CLI.md gives.
	type report struct {
		Dir             string   `json:"dir"`
		LoadSeconds     *float64 `json:"load_seconds"`
		RepackCache     *string  `json:"repack_cache"`
		Path            *string  `json:"repack_cache_path"`
		Mapped          *bool    `json:"repack_cache_mapped"`
		Wrote           *bool    `json:"repack_cache_wrote"`
		Notes           []string `json:"repack_cache_notes"`
		Bytes           *int64   `json:"repack_cache_bytes"`
		HugeMappedBytes *int64   `json:"repack_cache_huge_mapped_bytes"`
	}
	decode := func(out string) (report, map[string]any) {
		var r report
		var fields map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("prepare --json: %v\n%s", err, out)
		}
		json.Unmarshal([]byte(out), &fields)
		return r, fields
	}
	code, out, errs := run(t, "prepare", "--model", dir, "--json")
	if code != 0 || errs != "" {
		t.Fatalf("prepare --json: exit %d, stderr %q", code, errs)
	}
	r, fields := decode(out)
	st, err := os.Stat(pack)
	if err != nil {
		t.Fatal(err)
	}
	if len(fields) != 9 || r.Dir != dir || r.LoadSeconds == nil || *r.LoadSeconds <= 0 || *r.RepackCache != "mapped "+pack ||
		*r.Path != pack || !*r.Mapped || *r.Wrote || r.Notes == nil || len(r.Notes) != 0 || *r.Bytes != st.Size() ||
		runtime.GOOS == "linux" && (r.HugeMappedBytes == nil || *r.HugeMappedBytes < 0 || *r.HugeMappedBytes > st.Size()) {
		t.Errorf("prepare --json on the AWQ folder:\n%s", out)
	}
	// A model with nothing to repack says so with empty values.
	plain := filepath.Join(t.TempDir(), "f32")
	if _, err := synth.Generate(plain, synth.Options{Preset: "tiny", DType: "f32", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	code, out, errs = run(t, "prepare", "--model", plain, "--json")
	if code != 0 || errs != "" {
		t.Fatalf("prepare --json: exit %d, stderr %q", code, errs)
	}
	if r, fields = decode(out); len(fields) != 9 || r.Dir != plain || *r.RepackCache != "" || *r.Path != "" || *r.Mapped || *r.Wrote ||
		len(r.Notes) != 0 || *r.Bytes != 0 || r.HugeMappedBytes != nil {
		t.Errorf("prepare --json on an F32 folder:\n%s", out)
	}
}

// TestBenchReportsPackMapping: bench --json on an AWQ folder reports the
// repacked-weights file's size — the file's length on disk — and, where
// the system says, how much of it is mapped 2 MiB at a time (never more
// than the file).
func TestBenchReportsPackMapping(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	if _, err := synth.Generate(dir, synth.Options{Preset: "tiny", DType: "awq", Seed: 1}); err != nil {
		t.Fatal(err)
	}
	args := []string{"bench", "--model", dir, "--pp", "0", "--positions", "", "--streams", "", "--bandwidth-mib", "0", "--json"}
	for _, first := range []bool{true, false} {
		code, out, errs := run(t, args...)
		if code != 0 {
			t.Fatalf("bench: exit %d, stderr %q", code, errs)
		}
		var r struct {
			Repack string `json:"repack_cache"`
			Bytes  int64  `json:"repack_cache_bytes"`
			Huge   *int64 `json:"repack_cache_huge_mapped_bytes"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("bench --json: %v\n%s", err, out)
		}
		st, err := os.Stat(filepath.Join(dir, ".streamguard", "awq-int4.pack"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Bytes != st.Size() || r.Repack == "" {
			t.Errorf("first run %v: repack_cache %q, %d bytes; the file has %d", first, r.Repack, r.Bytes, st.Size())
		}
		if runtime.GOOS == "linux" && (r.Huge == nil || *r.Huge < 0 || *r.Huge > r.Bytes) {
			t.Errorf("first run %v: repack_cache_huge_mapped_bytes %v of %d", first, r.Huge, r.Bytes)
		}
	}
}
