//go:build !unix

package mmap

import (
	"io"
	"os"
)

// Maps reports whether Map maps files (true) or reads a copy (false).
const Maps = false

// Map reads the whole file: systems without syscall.Mmap get a copy. Go's
// allocator returns 8-byte-aligned memory for such sizes, so typed views of
// the bytes stay zero-copy relative to this buffer.
func Map(f *os.File, size int) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b); err != nil {
		return nil, err
	}
	return b, nil
}

// Unmap drops a copy that Map returned (the garbage collector frees it).
func Unmap([]byte) error { return nil }
