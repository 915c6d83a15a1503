package packfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func testKey(t *testing.T, dir string) (Key, string) {
	t.Helper()
	src := filepath.Join(dir, "model.safetensors")
	data := bytes.Repeat([]byte("0123456789abcdef"), 3<<16) // 3 MiB: a head and samples
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	srcs, err := Describe([]Input{{Path: src}})
	if err != nil {
		t.Fatal(err)
	}
	return Key{Layout: "test v1", Sources: srcs}, src
}

// testUnit is a unit to build and its sections' contents.
type testUnit struct {
	names []string
	dims  []int
	data  [][]byte
}

func testUnits() []testUnit {
	return []testUnit{
		{names: []string{"a.q", "a.k"}, dims: []int{64, 32, 16, 16}, data: [][]byte{[]byte("qqqqkk"), []byte("meta")}},
		{names: []string{"b"}, dims: []int{8}, data: [][]byte{{}, bytes.Repeat([]byte{7}, 5000)}},
	}
}

// build writes units to path under key with Create, Section, Seal and
// Commit, and closes the File Commit returns after checking that it views
// what was written.
func build(t testing.TB, path string, key Key, units []testUnit) {
	t.Helper()
	us := make([]Unit, len(units))
	for i, u := range units {
		us[i] = Unit{Names: u.names, Dims: u.dims}
		for _, d := range u.data {
			us[i].Sizes = append(us[i].Sizes, int64(len(d)))
		}
	}
	b, err := Create(path, key, us)
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range units {
		for j, d := range u.data {
			if s := b.Section(i, j); len(s) != len(d) || bytes.Count(s, []byte{0}) != len(s) {
				t.Fatalf("section %d.%d: %d bytes, not %d zeros", i, j, len(s), len(d))
			}
			copy(b.Section(i, j), d)
		}
		b.Seal(i)
	}
	f, err := b.Commit()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, u := range units {
		if err := f.Check(i); err != nil {
			t.Fatal(err)
		}
		for j, d := range u.data {
			if !bytes.Equal(f.Section(i, j), d) {
				t.Fatalf("committed section %d.%d differs", i, j)
			}
		}
	}
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	key, _ := testKey(t, dir)
	path := filepath.Join(dir, ".streamguard", "pack")
	build(t, path, key, testUnits())
	f, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	es := f.Entries()
	if len(es) != 2 || strings.Join(es[0].Names, ",") != "a.q,a.k" || len(es[0].Dims) != 4 || es[0].Dims[3] != 16 || es[1].Names[0] != "b" {
		t.Fatalf("entries %+v", es)
	}
	for i := range es {
		if err := f.Check(i); err != nil {
			t.Fatal(err)
		}
	}
	if got := string(f.Section(0, 0)); got != "qqqqkk" {
		t.Errorf("section 0.0 = %q, want qqqqkk", got)
	}
	if got := string(f.Section(0, 1)); got != "meta" {
		t.Errorf("section 0.1 = %q, want meta", got)
	}
	if got := f.Section(1, 1); len(got) != 5000 || got[4999] != 7 || len(f.Section(1, 0)) != 0 {
		t.Errorf("entry 1: %d and %d bytes", len(f.Section(1, 0)), len(got))
	}
	for i, e := range es {
		for j, s := range e.Sections {
			if s.Off%align != 0 {
				t.Errorf("entry %d section %d at %d, not %d-aligned", i, j, s.Off, align)
			}
		}
	}
	if m, _ := filepath.Glob(path + ".tmp-*"); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("file mode %v (%v), want 0644: other users and containers read models", fi.Mode(), err)
	}
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	key, src := testKey(t, dir)
	path := filepath.Join(dir, "pack")
	if _, err := Open(path, key); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	build(t, path, key, testUnits())
	var stale *StaleError

	other := key
	other.Layout = "test v2"
	if _, err := Open(path, other); !errors.As(err, &stale) || !strings.Contains(err.Error(), "layout") {
		t.Errorf("other layout: %v, want a StaleError naming the layout", err)
	}

	// The source rewritten with the same size: caught by the time or the
	// sampled contents.
	b, _ := os.ReadFile(src)
	b[len(b)-10] ^= 1
	if err := os.WriteFile(src, b, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(0, key.Sources[0].ModTime)
	for _, keepTime := range []bool{false, true} {
		if keepTime {
			if err := os.Chtimes(src, old, old); err != nil {
				t.Fatal(err)
			}
		}
		srcs, err := Describe([]Input{{Path: src}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(path, Key{Layout: key.Layout, Sources: srcs}); !errors.As(err, &stale) {
			t.Errorf("source changed (time kept %v): %v, want a StaleError", keepTime, err)
		}
	}

	good, _ := os.ReadFile(path)
	f, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	s := f.Entries()[1].Sections[1]
	f.Close()

	corrupt := func(name string, edit func([]byte) []byte, wantOpen bool) {
		t.Helper()
		b := edit(bytes.Clone(good))
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path, key)
		if !wantOpen {
			if err == nil {
				f.Close()
				t.Errorf("%s: opened", name)
			}
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer f.Close()
		if err := f.Check(1); err == nil || !strings.Contains(err.Error(), "CRC") {
			t.Errorf("%s: Check: %v, want a CRC mismatch", name, err)
		}
	}
	corrupt("flipped data byte", func(b []byte) []byte { b[s.Off+100] ^= 0x40; return b }, true)
	corrupt("truncated", func(b []byte) []byte { return b[:s.Off+10] }, false)
	corrupt("flipped header byte", func(b []byte) []byte { b[prefix+3] ^= 1; return b }, false)
	corrupt("bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, false)
	corrupt("empty", func(b []byte) []byte { return nil }, false)
}

// FuzzParse feeds parse arbitrary files: it must not panic, and what it
// accepts must place every section inside the data.
func FuzzParse(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "pack")
	build(f, path, Key{Layout: "fuzz"}, testUnits())
	good, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:prefix+20])
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parse(b)
		if err != nil {
			return
		}
		for _, e := range h.Entries {
			for _, s := range e.Sections {
				_ = b[s.Off : s.Off+s.Len]
			}
		}
	})
}

// FuzzHeader feeds decodeHeader arbitrary headers (FuzzParse rarely gets
// past the header's CRC): accepted sections must lie inside the data.
func FuzzHeader(f *testing.F) {
	f.Add([]byte(`{"key":{"layout":"x","sources":[{"name":"m","size":1,"mtime_ns":2,"sample":"ab"}]},"entries":[{"names":["a"],"dims":[1,2],"sections":[{"off":4096,"len":10,"crc":3}]}]}`), int64(8192))
	f.Add([]byte(`{"entries":[{"sections":[{"off":9223372036854775807,"len":9223372036854775807}]}]}`), int64(4096))
	f.Add([]byte(`{"key":{},"entries":[],"extra":1}`), int64(0))
	f.Fuzz(func(t *testing.T, hb []byte, size int64) {
		const start = 100
		h, err := decodeHeader(hb, start, size)
		if err != nil {
			return
		}
		for _, e := range h.Entries {
			for _, s := range e.Sections {
				if s.Off < start || s.Len < 0 || s.Off+s.Len > size || s.Off+s.Len < s.Off {
					t.Fatalf("accepted section %+v of a %d-byte file", s, size)
				}
			}
		}
	})
}

func TestAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pack")
	b, err := Create(path, Key{Layout: "x"}, []Unit{{Names: []string{"a"}, Sizes: []int64{10}}})
	if err != nil {
		t.Fatal(err)
	}
	b.Abort()
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("left %v", m)
	}
	b, err = Create(path, Key{Layout: "x"}, []Unit{{Names: []string{"a"}, Sizes: []int64{10}}})
	if err != nil {
		t.Fatal(err)
	}
	copy(b.Section(0, 0), "0123456789")
	f, err := b.Commit()
	if err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Errorf("Commit of an unsealed entry: %v", err)
	}
	if got := string(f.Section(0, 0)); got != "0123456789" {
		t.Errorf("the failed Commit's File views %q", got)
	}
	f.Close()
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("left %v", m)
	}
}

// TestOpenRefusesWritableByOthers: a file or folder that every user may
// write is refused, well formed or not; group-writable is accepted (tests
// run as one user, so the owner half of the rule is not exercised here).
func TestOpenRefusesWritableByOthers(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no Unix permissions on " + runtime.GOOS)
	}
	dir := t.TempDir()
	key, _ := testKey(t, dir)
	sub := filepath.Join(dir, "cache")
	path := filepath.Join(sub, "pack")
	build(t, path, key, testUnits())
	f, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for _, c := range []struct {
		name string
		mode os.FileMode
		ok   bool
	}{{path, 0o666, false}, {path, 0o602, false}, {sub, 0o777, false}, {sub, 0o757, false}, {path, 0o664, true}, {sub, 0o775, true}} {
		old, err := os.Stat(c.name)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(c.name, c.mode); err != nil {
			t.Fatal(err)
		}
		f, err := Open(path, key)
		if c.ok && err != nil {
			t.Errorf("%s mode %v: %v", c.name, c.mode, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "writable by every user")) {
			t.Errorf("%s mode %v: Open gave %v, want a refusal", c.name, c.mode, err)
		}
		if err == nil {
			f.Close()
		}
		if c.name == sub {
			b, err := Create(filepath.Join(sub, "other"), key, nil)
			if c.ok != (err == nil) {
				t.Errorf("Create in a folder of mode %v: %v", c.mode, err)
			}
			if err == nil {
				b.Abort()
			}
		}
		if err := os.Chmod(c.name, old.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCreateRemovesAbandoned: Create deletes temporary files that a dead
// builder left over an hour ago, and leaves a recent one (a builder still
// at work) alone.
func TestCreateRemovesAbandoned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pack")
	old, recent, other := path+".tmp-111", path+".tmp-222", filepath.Join(dir, "other.tmp-333")
	for _, f := range []string{old, recent, other} {
		if err := os.WriteFile(f, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-2 * time.Hour)
	for _, f := range []string{old, other} {
		if err := os.Chtimes(f, long, long); err != nil {
			t.Fatal(err)
		}
	}
	b, err := Create(path, Key{Layout: "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b.Abort()
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("abandoned %s kept (%v)", old, err)
	}
	for _, f := range []string{recent, other} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s removed: %v", f, err)
		}
	}
}
