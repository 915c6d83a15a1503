//go:build unix

package mmap

import (
	"os"
	"syscall"
)

// Maps reports whether Map maps files (true) or reads a copy (false).
const Maps = true

// Map maps size bytes of f read-only and shared. The mapping outlives f's
// descriptor, so a folder with many files holds no open descriptors.
func Map(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

// Unmap releases a mapping that Map returned; its bytes must not be used
// afterwards.
func Unmap(b []byte) error { return syscall.Munmap(b) }
