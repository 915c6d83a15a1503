//go:build !unix

package packfile

import (
	"io"
	"os"
)

// mapFile reads the whole file where syscall.Mmap is missing.
func mapFile(f *os.File, size int) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b); err != nil {
		return nil, err
	}
	return b, nil
}

func unmapFile([]byte) error { return nil }
