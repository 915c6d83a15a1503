//go:build !linux

package mmap

import (
	"errors"
	"os"
)

// MapPopulated is Map: only Linux maps a file's pages in ahead of reads
// (and where Map reads a copy, the copy is read whole already).
func MapPopulated(f *os.File, size int) ([]byte, error) { return Map(f, size) }

// AdviseHugePages does nothing: huge pages for file mappings are asked for
// on Linux only.
func AdviseHugePages([]byte) {}

// HugeMapped reports errors.ErrUnsupported: only Linux says how a file is
// mapped.
func HugeMapped([]byte) (int, error) { return 0, errors.ErrUnsupported }

// Resident reports errors.ErrUnsupported, as HugeMapped.
func Resident([]byte) (int, error) { return 0, errors.ErrUnsupported }

// HugeFoliosIn reports false: huge folios are seen on Linux only.
func HugeFoliosIn(string) (bool, error) { return false, nil }

// Release does nothing: page-table entries are dropped on Linux only.
func Release([]byte) {}
