//go:build !unix

package safetensors

import (
	"io"
	"os"
)

// mapFile reads the whole file: systems without syscall.Mmap get a copy.
// Go's allocator returns 8-byte-aligned memory for such sizes, so the typed
// views stay zero-copy relative to this buffer.
func mapFile(f *os.File, size int) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b); err != nil {
		return nil, err
	}
	return b, nil
}

func unmapFile([]byte) error { return nil }
