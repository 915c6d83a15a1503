package packfile

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/streamguard/streamguard/internal/mmap"
)

// TestHugeFolios: a file the builder wrote is cached in 2 MiB folios and
// mapped 2 MiB at a time by Open, where the kernel and the filesystem of
// the test's temporary folder can do that at all — which a probe file,
// written through a mapping that asks for huge pages the same way, decides
// before the builder's file is judged. A 4 KiB page table entry's first
// read cost about 2 µs on a virtual machine, most of a load's check of a
// 3.5 GB file (docs/BENCHMARKS.md).
func TestHugeFolios(t *testing.T) {
	const size = 16 << 20
	dir := t.TempDir()
	if pmd := probeHugeFolios(t, filepath.Join(dir, "probe"), size); pmd < size/2 {
		t.Skipf("this kernel and the filesystem of %s cache no 2 MiB folios (a probe file written through a huge-page mapping: %d of %d bytes mapped 2 MiB at a time); nothing to check", dir, pmd, size)
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

// probeHugeFolios writes size bytes to path through a shared mapping given
// MADV_HUGEPAGE before it is written, maps the file again, and returns how
// many of its bytes that mapping maps 2 MiB at a time.
func probeHugeFolios(t *testing.T, path string, size int) int {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	w, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	_ = syscall.Madvise(w, syscall.MADV_HUGEPAGE)
	for i := range w {
		w[i] = byte(i)
	}
	syscall.Munmap(w)
	r, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(r)
	return hugeMapped(t, r)
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
