package safetensors

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestOpenDirIndexBoundBeforeRead: an index over maxIndexSize is refused
// from its size, before any of it is read, so the bound caps the memory:
// a sparse 160 MiB index (no disk used) must not cost 160 MiB to refuse.
func TestOpenDirIndexBoundBeforeRead(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, IndexFile)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(160 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	_, err = OpenDir(dir)
	runtime.ReadMemStats(&m1)
	want := "safetensors: " + path + ": index is 167772160 bytes, over the 104857600-byte limit"
	if err == nil || err.Error() != want {
		t.Fatalf("OpenDir = %v, want %s", err, want)
	}
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 1<<20 {
		t.Fatalf("refusing a 160 MiB index allocated %d bytes", alloc)
	}
}
