package mmap

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MapPopulated is Map for a file whose every byte will be read at once. Two
// things make that first read cheap on Linux:
//
//   - The mapping asks for huge pages (MADV_HUGEPAGE) before anything is
//     read, so that a file read into the page cache through it is read in
//     2 MiB folios where the filesystem keeps such folios (ext4 since Linux
//     6.16, XFS), and mapped 2 MiB at a time (one page-table entry instead
//     of 512) by this and every later mapping of it while it stays cached.
//     On a virtual machine the first read through each 4 KiB entry cost
//     about 2 µs, most of the time checking a 230 MB file took
//     (docs/BENCHMARKS.md).
//   - Every page is then mapped in one call (MADV_POPULATE_READ, Linux 5.14;
//     before it MAP_POPULATE, which runs before the advice can be given)
//     instead of one fault per page as it is first read.
//
// Neither changes what is read; a kernel that supports neither maps the
// file as Map does.
func MapPopulated(f *os.File, size int) ([]byte, error) {
	b, err := syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	AdviseHugePages(b)
	if unix.Madvise(b, unix.MADV_POPULATE_READ) == nil {
		return b, nil
	}
	if err := syscall.Munmap(b); err != nil {
		return nil, err
	}
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED|syscall.MAP_POPULATE)
}

// AdviseHugePages asks that the pages of the mapping b be 2 MiB where the
// system can (MADV_HUGEPAGE): a file written or read through it is then
// cached in 2 MiB folios, which later mappings map whole. Best effort: a
// kernel without transparent huge pages refuses, and nothing changes.
func AdviseHugePages(b []byte) {
	if len(b) > 0 {
		_ = unix.Madvise(b, unix.MADV_HUGEPAGE)
	}
}

// Release drops this process's page-table entries for the mapping b
// (MADV_DONTNEED): a shared file mapping's pages stay in the page cache and
// are mapped again when read. Best effort.
func Release(b []byte) {
	if len(b) > 0 {
		_ = unix.Madvise(b, unix.MADV_DONTNEED)
	}
}

// HugeMapped returns how many bytes of the file mapping that holds b are
// mapped 2 MiB at a time (FilePmdMapped in /proc/self/smaps): how a test or
// a report sees whether the page cache kept a file in huge folios.
func HugeMapped(b []byte) (int, error) { return smapsField(b, "FilePmdMapped:") }

// Resident returns how many bytes of the mapping that holds b this process
// has mapped in (Rss in /proc/self/smaps).
func Resident(b []byte) (int, error) { return smapsField(b, "Rss:") }

// smapsField reads a size field, in kB, of the mapping that holds b from
// /proc/self/smaps, in bytes.
func smapsField(b []byte, field string) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	text, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	addr := uint64(uintptr(unsafe.Pointer(&b[0])))
	in := false
	for line := range strings.SplitSeq(string(text), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if lo, hi, ok := strings.Cut(f[0], "-"); ok && len(f) >= 5 {
			// A mapping's first line: "start-end perms offset dev inode [path]".
			l, err1 := strconv.ParseUint(lo, 16, 64)
			h, err2 := strconv.ParseUint(hi, 16, 64)
			in = err1 == nil && err2 == nil && l <= addr && addr < h
			continue
		}
		if in && f[0] == field && len(f) >= 2 {
			kb, err := strconv.Atoi(f[1])
			if err != nil {
				return 0, fmt.Errorf("smaps: %q", line)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("smaps: no %s line for the mapping at %#x", field, addr)
}

// HugeFoliosIn reports whether the page cache keeps a file of folder dir in
// 2 MiB folios: a 4 MiB probe file written there in one call, then mapped
// and read, must be mapped 2 MiB at a time somewhere. Tests ask it before
// they expect huge mappings of their own files; the probe is removed.
func HugeFoliosIn(dir string) (bool, error) {
	f, err := os.CreateTemp(dir, "huge-probe-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	const size = 4 << 20
	if _, err := f.Write(make([]byte, size)); err != nil {
		return false, err
	}
	b, err := Map(f, size)
	if err != nil {
		return false, err
	}
	defer Unmap(b)
	var sum byte
	for i := 0; i < size; i += 4096 {
		sum |= b[i] // reading maps the page in
	}
	n, err := HugeMapped(b)
	return n > 0 && sum == 0, err
}
