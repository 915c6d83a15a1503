package packfile

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/streamguard/streamguard/internal/mmap"
)

// TestHugeFolios: a file the builder wrote is cached in 2 MiB folios and
// mapped 2 MiB at a time by Open, where the kernel and the filesystem of
// the test's temporary folder can do that at all (mmap.HugeFoliosIn). A
// 4 KiB page-table entry's first read cost about 2 µs on a virtual
// machine, most of a load's check of a 3.5 GB file (docs/BENCHMARKS.md).
func TestHugeFolios(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	if ok, err := mmap.HugeFoliosIn(dir); err != nil || !ok {
		t.Skipf("the page cache keeps no file of %s in 2 MiB folios (%v): nothing to check", dir, err)
	}
	key, _ := testKey(t, dir)
	path := filepath.Join(dir, ".streamguard", "pack")
	data := bytes.Repeat([]byte("streamguard pack"), size/16)
	build(t, path, key, []testUnit{{names: []string{"w"}, dims: []int{size}, data: [][]byte{data}}})
	f, err := Open(path, key)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Check(0); err != nil {
		t.Fatal(err)
	}
	// Of the section's 16 MiB, the 2 MiB-aligned file ranges wholly inside
	// it (7 of 8 at least) must be mapped whole.
	if pmd := hugeMapped(t, f.Section(0, 0)); pmd < size-2<<20 {
		t.Errorf("%d bytes of the %d-byte section mapped 2 MiB at a time, want at least %d", pmd, size, size-2<<20)
	}
}

// hugeMapped is mmap.HugeMapped, skipping the test where it cannot be known.
func hugeMapped(t *testing.T, b []byte) int {
	t.Helper()
	n, err := mmap.HugeMapped(b)
	if err != nil {
		t.Skipf("cannot see how the file is mapped: %v", err)
	}
	return n
}
