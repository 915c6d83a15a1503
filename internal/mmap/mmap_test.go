package mmap

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMap: the mapping holds the file's bytes and outlives its descriptor,
// populated or not.
func TestMap(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	want := []byte("mapped bytes, read-only")
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, m := range map[string]func(*os.File, int) ([]byte, error){"Map": Map, "MapPopulated": MapPopulated} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		b, err := m(f, len(want))
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != string(want) {
			t.Errorf("%s: mapped %q, want %q", name, b, want)
		}
		if err := Unmap(b); err != nil {
			t.Fatal(err)
		}
	}
}
