package mmap

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMapPopulatedReadsHugeFolios: a file that is not in the page cache is
// read through MapPopulated's mapping in 2 MiB folios and mapped 2 MiB at a
// time, where the kernel and the filesystem of the test's temporary folder
// keep such folios at all (HugeFoliosIn). Without the mapping's advice,
// reading the file back after it was dropped from the cache left it in
// 4 KiB pages (docs/BENCHMARKS.md).
func TestMapPopulatedReadsHugeFolios(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	if ok, err := HugeFoliosIn(dir); err != nil || !ok {
		t.Skipf("the page cache keeps no file of %s in 2 MiB folios (%v): nothing to check", dir, err)
	}
	p := filepath.Join(dir, "f")
	want := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	if err := os.WriteFile(p, want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Drop the file from the page cache, so that the next mapping reads it.
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, size, unix.FADV_DONTNEED); err != nil {
		t.Skipf("cannot drop the file from the page cache (%v)", err)
	}
	b, err := MapPopulated(f, size)
	if err != nil {
		t.Fatal(err)
	}
	defer Unmap(b)
	if !bytes.Equal(b, want) {
		t.Fatal("mapped bytes differ from the file's")
	}
	if pmd := hugeMapped(t, b); pmd < size-2<<20 {
		t.Errorf("%d of %d bytes mapped 2 MiB at a time after a read from disk, want at least %d", pmd, size, size-2<<20)
	}
}

// hugeMapped is HugeMapped, skipping the test where it cannot be known.
func hugeMapped(t *testing.T, b []byte) int {
	t.Helper()
	n, err := HugeMapped(b)
	if err != nil {
		t.Skipf("cannot see how the file is mapped: %v", err)
	}
	return n
}
