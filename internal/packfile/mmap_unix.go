//go:build unix

package packfile

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only and shared: the pages are the
// page cache's, so processes loading the same model share them.
func mapFile(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func unmapFile(b []byte) error { return syscall.Munmap(b) }
