//go:build unix

package safetensors

import (
	"os"
	"syscall"
)

// mapFile maps size bytes of f read-only. The mapping outlives f's
// descriptor, so a folder with many shards holds no open files.
func mapFile(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func unmapFile(b []byte) error { return syscall.Munmap(b) }
